using NUnit.Framework;
using UVm.Areas;
using UVm.Faults;
using UVm.Frames;
using UVm.Spaces;

namespace UVm.Tests.Areas;

/// <summary>
/// The area set: where <see cref="AddressSpace.Map"/> puts an area, what overlapping maps do,
/// how <see cref="AddressSpace.Unmap"/> splits areas, <see cref="AddressSpace.Clear"/>, and
/// that misuse fails with its specific exception and leaves everything as it was.
/// </summary>
[TestFixture, NonParallelizable, CancelAfter(60_000)]
public sealed class AreaMapping : AreaFixture
{
    private const ulong A = 8 * MiB;

    /// <summary>Everything a failed call must leave as it was.</summary>
    private string State(AddressSpace space)
    {
        string areas = string.Join("; ", space.Areas);
        string slots = string.Join("; ", Snapshot(space, Span(0, 64 * MiB)));
        return $"areas: {areas}\nslots: {slots}\nframes {Pool.FramesInUse}, reserved {Pool.ReservedChunks}, host mappings {space.Space.CountHostMappings()}";
    }

    /// <summary>An area of 8 pages at <see cref="A"/>, every page written with its index + 1.</summary>
    private void EightWrittenPages()
    {
        Parent.Map(8 * Page, Lazy, At(A));
        for (int i = 0; i < 8; i++) Write(Parent, A + (ulong)i * Page, Filled((byte)(i + 1)));
    }

    private void AssertFails<TException>(Action call, UVmError? error = null) where TException : Exception
    {
        string before = State(Parent);
        var e = Assert.Throws<TException>(() => call());
        if (error is { } expected) Assert.That(((UVmException)(object)e!).Error, Is.EqualTo(expected));
        Assert.That(State(Parent), Is.EqualTo(before), "a failed call changed the space");
        AssertHostMirrors(Parent);
    }

    private void AssertFailsWith(UVmError error, Action call) => AssertFails<UVmException>(call, error);

    // ---- placement ---------------------------------------------------------------------

    [Test]
    public void Map_at_a_fixed_address_returns_it_and_records_the_area()
    {
        ulong va = Parent.Map(4 * Page, Lazy, At(A, PageFlags.RW));

        Assert.That(va, Is.EqualTo(A));
        Assert.That(Parent.Areas, Is.EqualTo(new[] { new VmArea(Span(A, 4 * Page), PageFlags.RW, Lazy) }));
        AssertHostMirrors(Parent);
    }

    [Test]
    public void Map_without_an_address_takes_the_first_free_aligned_range()
    {
        ulong first = Parent.Map(Page, Lazy, Anywhere(align: Huge));
        ulong second = Parent.Map(Page, Lazy, Anywhere(align: Huge));
        ulong small = Parent.Map(Page, Lazy, Anywhere());

        Assert.That(first, Is.EqualTo(Huge), "address 0 stays unmapped, so the first 2 MiB aligned range starts at 2 MiB");
        Assert.That(second, Is.EqualTo(2 * Huge), "the next aligned address after the first area");
        Assert.That(small, Is.EqualTo(Page), "page alignment fits below the first area");
        Assert.That(Parent.Areas.Select(a => a.Range.Start), Is.EqualTo(new[] { Page, Huge, 2 * Huge }));
        AssertHostMirrors(Parent);
    }

    [Test]
    public void Map_without_an_address_fills_the_first_gap_that_fits()
    {
        Parent.Map(Page, Lazy, At(Page));
        Parent.Map(Page, Lazy, At(4 * Page));
        Parent.Map(Page, Lazy, At(9 * Page));

        Assert.That(Parent.Map(2 * Page, Lazy, Anywhere()), Is.EqualTo(2 * Page), "[2, 4) fits two pages");
        Assert.That(Parent.Map(3 * Page, Lazy, Anywhere()), Is.EqualTo(5 * Page), "[5, 9) fits three");
        Assert.That(Parent.Map(2 * Page, Lazy, Anywhere()), Is.EqualTo(10 * Page), "no gap left below the last area");
        Assert.That(Parent.Map(Page, Lazy, Anywhere()), Is.EqualTo(8 * Page), "the page left at 8");
    }

    [Test]
    public void Map_without_an_address_fails_when_no_range_is_free()
    {
        AssertFailsWith(UVmError.NoMemory, () => Parent.Map(GiB, Lazy, Anywhere()));
    }

    // ---- overlaps --------------------------------------------------------------------------

    [Test]
    public void An_overlapping_map_without_can_overwrite_fails_and_changes_nothing()
    {
        EightWrittenPages();

        AssertFailsWith(UVmError.MapAlreadyMappedVaddr, () => Parent.Map(2 * Page, Lazy, At(A + 3 * Page)));
        AssertFailsWith(UVmError.MapAlreadyMappedVaddr, () => Parent.Map(16 * Page, Populated, At(A - 8 * Page)));
        AssertFailsWith(UVmError.MapAlreadyMappedVaddr, () => Parent.Map(Page, Lazy, At(A + 7 * Page)));

        for (int i = 0; i < 8; i++) Assert.That(Read(Parent, A + (ulong)i * Page, (int)Page), Is.EqualTo(Filled((byte)(i + 1))));
    }

    [Test]
    public void An_adjacent_map_does_not_overlap()
    {
        EightWrittenPages();

        Parent.Map(Page, Lazy, At(A + 8 * Page));
        Parent.Map(Page, Lazy, At(A - Page));

        Assert.That(Parent.Areas.Count, Is.EqualTo(3));
    }

    [Test]
    public void An_overlapping_map_with_can_overwrite_replaces_the_overlap()
    {
        EightWrittenPages();
        long frames = Pool.FramesInUse;

        Parent.Map(2 * Page, Lazy, At(A + 3 * Page, PageFlags.R, overwrite: true));

        Assert.That(Parent.Areas, Is.EqualTo(new[]
        {
            new VmArea(Span(A, 3 * Page), PageFlags.RW, Lazy),
            new VmArea(Span(A + 3 * Page, 2 * Page), PageFlags.R, Lazy),
            new VmArea(Span(A + 5 * Page, 3 * Page), PageFlags.RW, Lazy),
        }));
        Assert.That(Pool.FramesInUse, Is.EqualTo(frames - 2), "the replaced pages' frames are released");
        Assert.That(Read(Parent, A + 3 * Page, (int)(2 * Page)), Is.EqualTo(new byte[2 * Page]), "the new area starts zeroed");
        AssertFault(TryWrite(Parent, A + 3 * Page, Filled(1, 8)), A + 3 * Page, PageFaultKind.Protection);
        Assert.That(Read(Parent, A + 2 * Page, (int)Page), Is.EqualTo(Filled(3)));
        Assert.That(Read(Parent, A + 5 * Page, (int)Page), Is.EqualTo(Filled(6)));
        AssertHostMirrors(Parent);
    }

    [Test]
    public void Can_overwrite_over_a_hole_just_maps()
    {
        Parent.Map(4 * Page, Lazy, At(A, overwrite: true));

        Assert.That(Parent.Areas.Single().Range, Is.EqualTo(Span(A, 4 * Page)));
    }

    // ---- unmap --------------------------------------------------------------------------

    [Test]
    public void Unmap_in_the_middle_splits_the_area()
    {
        EightWrittenPages();
        long frames = Pool.FramesInUse;

        Parent.Unmap(Span(A + 3 * Page, 2 * Page));

        Assert.That(Parent.Areas, Is.EqualTo(new[]
        {
            new VmArea(Span(A, 3 * Page), PageFlags.RW, Lazy),
            new VmArea(Span(A + 5 * Page, 3 * Page), PageFlags.RW, Lazy),
        }));
        Assert.That(Pages(Parent, Span(A, 8 * Page)).Keys.Order(),
            Is.EqualTo(new ulong[] { 0, 1, 2, 5, 6, 7 }.Select(i => A + i * Page)));
        Assert.That(Pool.FramesInUse, Is.EqualTo(frames - 2));
        AssertFault(TryRead(Parent, A + 3 * Page, new byte[8]), A + 3 * Page, PageFaultKind.NotPresent);
        AssertFault(TryWrite(Parent, A + 4 * Page, Filled(1, 8)), A + 4 * Page, PageFaultKind.NotPresent);
        Assert.That(Pages(Parent, Span(A + 3 * Page, 2 * Page)), Is.Empty, "failed accesses map nothing");
        foreach (int i in new[] { 0, 1, 2, 5, 6, 7 })
            Assert.That(Read(Parent, A + (ulong)i * Page, (int)Page), Is.EqualTo(Filled((byte)(i + 1))));
        AssertHostMirrors(Parent);
    }

    [Test]
    public void Unmap_across_areas_and_holes_trims_both_ends()
    {
        Parent.Map(4 * Page, Lazy, At(A));
        Parent.Map(4 * Page, Lazy, At(A + 8 * Page));
        Write(Parent, A, Filled(1, (int)(4 * Page)));
        Write(Parent, A + 8 * Page, Filled(2, (int)(4 * Page)));

        Parent.Unmap(Span(A + 2 * Page, 8 * Page));

        Assert.That(Parent.Areas.Select(a => a.Range), Is.EqualTo(new[] { Span(A, 2 * Page), Span(A + 10 * Page, 2 * Page) }));
        Assert.That(Pool.FramesInUse, Is.EqualTo(4));
        Assert.That(Read(Parent, A + 10 * Page, (int)(2 * Page)), Is.EqualTo(Filled(2, (int)(2 * Page))));
        AssertHostMirrors(Parent);
    }

    [Test]
    public void Unmap_of_a_hole_changes_nothing()
    {
        EightWrittenPages();
        string before = State(Parent);

        Parent.Unmap(Span(A + 64 * Page, 16 * Page));

        Assert.That(State(Parent), Is.EqualTo(before));
    }

    [Test]
    public void Unmap_of_a_whole_2_MiB_region_gives_its_frame_reservation_back()
    {
        ulong va = MapLazy(Parent, 512);
        Read(Parent, va, 8);
        Assert.That(Pool.ReservedChunks, Is.EqualTo(1));

        Parent.Unmap(Span(va, 256 * Page));
        Assert.That(Pool.ReservedChunks, Is.EqualTo(1), "half the region is still an area");

        Parent.Unmap(Span(va, Huge));
        Assert.That(Pool.ReservedChunks, Is.Zero);
        Assert.That(Pool.FramesInUse, Is.Zero);
    }

    [Test]
    public void Unmap_of_the_last_small_area_of_a_region_gives_its_frame_reservation_back()
    {
        ulong a = Parent.Map(64 * Page, Lazy, Anywhere(align: Huge));
        ulong b = Parent.Map(64 * Page, Lazy, At(a + 128 * Page));
        Read(Parent, a, 8);
        Read(Parent, b, 8);
        Assert.That(Pool.ReservedChunks, Is.EqualTo(1), "both areas' pages come from the region's one chunk");

        Parent.Unmap(Span(a, 64 * Page));
        Assert.That(Pool.ReservedChunks, Is.EqualTo(1), "the other area still uses the region");

        Parent.Unmap(Span(b, 64 * Page));
        Assert.That(Pool.ReservedChunks, Is.Zero, "no area is left in the region");
        Assert.That(Pool.FramesInUse, Is.Zero);
        AssertHostMirrors(Parent);
    }

    [Test]
    public void A_split_linear_area_keeps_each_part_at_its_offset()
    {
        using var segment = Pool.AllocSegment(8);
        Parent.Map(8 * Page, new AreaBackend.LinearFrames(segment, 0), At(A));

        Parent.Unmap(Span(A + 2 * Page, Page));

        Assert.That(Parent.Areas.Select(a => a.Backend), Is.EqualTo(new AreaBackend[]
        {
            new AreaBackend.LinearFrames(segment, 0),
            new AreaBackend.LinearFrames(segment, 3 * Page),
        }));
        Assert.That(PageAt(Parent, A + 5 * Page)!.Value.Paddr, Is.EqualTo(segment.Paddr + 5 * Page));
        Parent.Clear();
    }

    [Test]
    public void Clear_removes_every_area_and_frees_every_frame()
    {
        EightWrittenPages();
        ulong pop = Parent.Map(16 * Page, Populated, Anywhere(align: Huge));
        ulong far = Parent.Map(Page, Lazy, At(512 * MiB));
        Write(Parent, far, Filled(1, 8));

        Parent.Clear();

        Assert.That(Parent.Areas, Is.Empty);
        Assert.That(Pool.FramesInUse, Is.Zero);
        Assert.That(Pool.ReservedChunks, Is.Zero);
        Assert.That(Parent.Space.CountHostMappings(), Is.EqualTo(1), "the arena is one reserved range again");
        AssertFault(TryRead(Parent, pop, new byte[8]), pop, PageFaultKind.NotPresent);
        AssertHostMirrors(Parent);

        Assert.That(Parent.Map(Page, Lazy, At(A)), Is.EqualTo(A), "the space is usable after Clear");
    }

    // ---- bad input ----------------------------------------------------------------------

    [Test]
    public void Map_of_zero_bytes_fails_with_invalid_args()
    {
        EightWrittenPages();
        AssertFailsWith(UVmError.InvalidArgs, () => Parent.Map(0, Lazy, At(32 * MiB)));
        AssertFailsWith(UVmError.InvalidArgs, () => Parent.Map(0, Lazy, Anywhere()));
    }

    [Test]
    public void Map_of_an_unaligned_length_or_address_fails_with_argument_exception()
    {
        EightWrittenPages();
        AssertFails<ArgumentException>(() => Parent.Map(Page + 1, Lazy, At(32 * MiB)));
        AssertFails<ArgumentException>(() => Parent.Map(Page, Lazy, At(32 * MiB + 8)));
        AssertFails<ArgumentException>(() => Parent.Map(Page, Lazy, new VmMapOptions { Addr = 32 * MiB + Page, Align = Huge }));
    }

    [Test]
    public void Map_past_the_end_of_the_space_fails_with_invalid_args()
    {
        EightWrittenPages();
        ulong size = Parent.Space.Size;
        AssertFailsWith(UVmError.InvalidArgs, () => Parent.Map(2 * Page, Lazy, At(size - Page)));
        AssertFailsWith(UVmError.InvalidArgs, () => Parent.Map(Page, Lazy, At(size)));
        AssertFailsWith(UVmError.InvalidArgs, () => Parent.Map(2 * Page, Lazy, At(ulong.MaxValue - Page + 1)));
    }

    [Test]
    public void Can_overwrite_without_an_address_fails_with_argument_exception()
    {
        EightWrittenPages();
        AssertFails<ArgumentException>(() => Parent.Map(Page, Lazy, new VmMapOptions { CanOverwrite = true }));
    }

    [TestCase(0UL)]
    [TestCase(2048UL)]
    [TestCase(3 * 4096UL)]
    [TestCase(4096UL + 1)]
    public void Map_with_a_bad_alignment_fails_with_argument_exception(ulong align)
    {
        EightWrittenPages();
        AssertFails<ArgumentException>(() => Parent.Map(Page, Lazy, new VmMapOptions { Align = align }));
    }

    [Test]
    public void Map_with_null_arguments_fails_with_argument_null_exception()
    {
        AssertFails<ArgumentNullException>(() => Parent.Map(Page, null!, Anywhere()));
        AssertFails<ArgumentNullException>(() => Parent.Map(Page, Lazy, null!));
    }

    [Test]
    public void Ranges_must_be_aligned_non_empty_and_inside_the_space()
    {
        EightWrittenPages();
        ulong size = Parent.Space.Size;
        var unaligned = new VaddrRange(A + 1, A + Page);
        var empty = new VaddrRange(A, A);
        var past = new VaddrRange(size - Page, size + Page);

        AssertFails<ArgumentException>(() => Parent.Unmap(unaligned));
        AssertFails<ArgumentException>(() => Parent.Protect(unaligned, PageFlags.R));
        AssertFails<ArgumentException>(() => Parent.QueryRange(unaligned));
        AssertFails<ArgumentException>(() => Parent.Prefault(unaligned, PageFaultAccess.Read));
        foreach (VaddrRange bad in new[] { empty, past })
        {
            AssertFailsWith(UVmError.InvalidArgs, () => Parent.Unmap(bad));
            AssertFailsWith(UVmError.InvalidArgs, () => Parent.Protect(bad, PageFlags.R));
            AssertFailsWith(UVmError.InvalidArgs, () => Parent.QueryRange(bad));
            AssertFailsWith(UVmError.InvalidArgs, () => Parent.Prefault(bad, PageFaultAccess.Read));
        }
    }

    [Test]
    public void A_disposed_address_space_refuses_every_call()
    {
        AddressSpace gone = NewAddressSpace();
        gone.Map(4 * Page, Lazy, At(A));
        gone.Dispose();
        gone.Dispose(); // a second dispose does nothing

        Assert.Throws<ObjectDisposedException>(() => gone.Map(Page, Lazy, At(32 * MiB)));
        Assert.Throws<ObjectDisposedException>(() => gone.Unmap(Span(A, Page)));
        Assert.Throws<ObjectDisposedException>(() => gone.Protect(Span(A, Page), PageFlags.R));
        Assert.Throws<ObjectDisposedException>(() => gone.QueryRange(Span(A, Page)));
        Assert.Throws<ObjectDisposedException>(() => gone.Prefault(Span(A, Page), PageFaultAccess.Read));
        Assert.Throws<ObjectDisposedException>(() => gone.Clear());
        Assert.Throws<ObjectDisposedException>(() => gone.Fork());
        Assert.That(Pool.FramesInUse, Is.Zero);
    }

    [Test]
    public void A_populated_map_larger_than_the_pool_fails_with_no_memory_and_leaves_the_pool_usable()
    {
        EightWrittenPages();

        AssertFailsWith(UVmError.NoMemory, () => Parent.Map(128 * MiB, Populated, Anywhere(align: Huge)));

        ulong va = Parent.Map(16 * Page, Populated, Anywhere(align: Huge));
        Write(Parent, va, Filled(1, (int)(16 * Page)));
        AssertHostMirrors(Parent);
    }

    [Test]
    public void A_linear_backend_must_fit_be_aligned_and_come_from_the_spaces_pool()
    {
        EightWrittenPages();
        using var segment = Pool.AllocSegment(4);
        using var foreignPool = new FramePoolScope();
        using var foreign = foreignPool.Pool.AllocSegment(4);
        using var io = IoMem.CreateAnonymous(4 * Page);

        AssertFailsWith(UVmError.InvalidArgs, () => Parent.Map(8 * Page, new AreaBackend.LinearFrames(segment, 0), At(32 * MiB)));
        AssertFailsWith(UVmError.InvalidArgs, () => Parent.Map(Page, new AreaBackend.LinearFrames(segment, 4 * Page), At(32 * MiB)));
        AssertFails<ArgumentException>(() => Parent.Map(Page, new AreaBackend.LinearFrames(segment, 100), At(32 * MiB)));
        AssertFails<ArgumentException>(() => Parent.Map(Page, new AreaBackend.LinearFrames(foreign, 0), At(32 * MiB)));
        AssertFailsWith(UVmError.InvalidArgs, () => Parent.Map(8 * Page, new AreaBackend.LinearIoMem(io, 0), At(32 * MiB)));
        AssertFails<ArgumentException>(() => Parent.Map(Page, new AreaBackend.LinearIoMem(io, 10), At(32 * MiB)));
    }

    /// <summary>A small second pool, disposed after its segments.</summary>
    private sealed class FramePoolScope : IDisposable
    {
        public FramePool Pool { get; } = new(2 * MiB);
        public void Dispose() => Pool.Dispose();
    }
}
