using NUnit.Framework;
using UVm.Areas;
using UVm.Faults;
using UVm.Frames;
using UVm.Io;
using UVm.Spaces;
using UVm.Tests.TestSupport;

namespace UVm.Tests.Areas;

/// <summary>
/// Image areas: contents put into pool frames once and mapped, without a copy, by every space
/// that maps the image; a write copies the page for the writer; the image outlives nothing it
/// should not and never changes.
/// </summary>
[TestFixture, NonParallelizable, CancelAfter(120_000)]
public sealed class ImageAreas : AreaFixture
{
    /// <summary>Bytes where byte <c>i</c> is a function of <c>i</c> and <paramref name="seed"/> (never all zero per page).</summary>
    private static byte[] Contents(int length, int seed = 7)
    {
        var bytes = new byte[length];
        for (int i = 0; i < length; i++) bytes[i] = (byte)(i * 31 + i / 4096 + seed | 1);
        return bytes;
    }

    private VmImage NewImage(byte[] contents) => Track(VmImage.FromBytes(contents, Pool));

    [Test]
    public void An_image_maps_its_contents_without_a_copy_and_pads_the_last_page_with_zeros()
    {
        byte[] contents = Contents(3 * (int)Page + 100);
        VmImage image = NewImage(contents);
        Assert.That((image.Length, image.Size), Is.EqualTo(((ulong)contents.Length, 4 * Page)));
        Assert.That(Pool.FramesInUse, Is.EqualTo(4), "the image's frames, once");

        ulong va = Parent.Map(4 * Page, new AreaBackend.Image(image, 0), Anywhere(PageFlags.R));

        Assert.That(Pool.FramesInUse, Is.EqualTo(4), "mapping copies nothing");
        byte[] read = Read(Parent, va, (int)(4 * Page));
        Assert.That(read.AsSpan(0, contents.Length).SequenceEqual(contents), Is.True);
        Assert.That(read.AsSpan(contents.Length).ToArray().All(b => b == 0), Is.True, "the last page is zero-padded");
        Dictionary<ulong, PageInfo> pages = Pages(Parent, Span(va, 4 * Page));
        Assert.That(pages.Values.Select(p => p.References), Is.All.EqualTo(2), "the image's reference and the mapping's");
        Assert.That(pages.Values.Select(p => p.Flags), Is.All.EqualTo(PageFlags.R));
        Assert.That(Parent.Space.CountHostMappings(), Is.EqualTo(3), "contiguous frames: one host mapping between the two reserved parts of the arena");
        Assert.That((Parent.Space.HandledFaults, Parent.Space.UnresolvedFaults), Is.EqualTo((0L, 0L)), "mapped at once: no fault");
    }

    [Test]
    public void A_write_to_a_writable_image_area_copies_the_page_and_the_image_stays()
    {
        byte[] contents = Contents(8 * (int)Page);
        VmImage image = NewImage(contents);
        Parent.FaultAroundPages = 1;
        ulong a = Parent.Map(8 * Page, new AreaBackend.Image(image, 0), Anywhere());
        AddressSpace other = NewAddressSpace();
        ulong b = other.Map(8 * Page, new AreaBackend.Image(image, 0), Anywhere());

        Write(Parent, a + 2 * Page + 5, [0xEE]);

        Assert.That(Parent.Stats.CopyOnWriteCopies, Is.EqualTo(1));
        Assert.That(Parent.Stats.CopyOnWriteTakeovers, Is.Zero, "the image holds a reference: never taken over");
        Assert.That(Pool.FramesInUse, Is.EqualTo(9), "the image and one copied page");
        Assert.That(Read(Parent, a + 2 * Page + 5, 1)[0], Is.EqualTo(0xEE));
        Assert.That(Read(Parent, a + 2 * Page, 5).SequenceEqual(contents.AsSpan(2 * (int)Page, 5).ToArray()), Is.True, "the rest of the page was copied");
        Assert.That(Read(other, b, (int)(8 * Page)).SequenceEqual(contents), Is.True, "the other space still sees the image");
        AssertHostMirrors(Parent, other);
    }

    [Test]
    public void One_hundred_spaces_over_one_64_MiB_image_hold_one_copy_of_it()
    {
        const ulong Size = 64 * MiB;
        using var pool = new FramePool(128 * MiB);
        byte[] contents = Contents((int)Size, seed: 3);
        var spaces = new List<AddressSpace>();
        VmImage image = VmImage.FromBytes(contents, pool);
        try
        {
            Assert.That(pool.FramesInUse, Is.EqualTo(Size / Page));
            for (int i = 0; i < 100; i++)
            {
                var s = new AddressSpace(new VmSpaceOptions { Size = GiB, Pool = pool });
                spaces.Add(s);
                s.Map(Size, new AreaBackend.Image(image, 0), Anywhere(PageFlags.R, Huge));
            }
            Assert.That(pool.FramesInUse, Is.EqualTo(Size / Page), "one copy, however many spaces map it");
            Assert.That(pool.ReferenceCount(0), Is.EqualTo(101));
            foreach (AddressSpace s in new[] { spaces[0], spaces[57], spaces[99] })
            {
                ulong va = s.Areas.Single().Range.Start;
                Assert.That(Read(s, va + 13 * MiB, 4096).SequenceEqual(contents.AsSpan(13 * (int)MiB, 4096).ToArray()), Is.True);
                Assert.That(Read(s, va + Size - 8, 8).SequenceEqual(contents.AsSpan((int)Size - 8).ToArray()), Is.True);
                Assert.That(s.Space.CountHostMappings(), Is.EqualTo(3), "one mapping between the reserved parts");
            }
            foreach (AddressSpace s in spaces) Assert.That(s.Space.CheckHostMirror(), Is.Empty);
        }
        finally
        {
            foreach (AddressSpace s in spaces) s.Dispose();
            image.Dispose();
            VmSpace.Deactivate();
            Parent.Space.Activate();
        }
        pool.Trim();
        Assert.That(pool.FramesInUse, Is.Zero);
    }

    [Test]
    public void A_fork_shares_image_pages_and_each_side_copies_what_it_writes()
    {
        byte[] contents = Contents(4 * (int)Page);
        VmImage image = NewImage(contents);
        Parent.FaultAroundPages = 1;
        ulong va = Parent.Map(4 * Page, new AreaBackend.Image(image, 0), Anywhere());
        AddressSpace child = ForkOf(Parent);
        child.FaultAroundPages = 1;

        Write(child, va, [1]);
        Write(Parent, va + Page, [2]);

        Assert.That(Read(child, va, 1)[0], Is.EqualTo(1));
        Assert.That(Read(Parent, va, 1)[0], Is.EqualTo(contents[0]));
        Assert.That(Read(child, va + Page, 1)[0], Is.EqualTo(contents[Page]));
        Assert.That(Read(Parent, va + Page, 1)[0], Is.EqualTo(2));
        Assert.That(Pool.FramesInUse, Is.EqualTo(6), "the image and two copies");
        Assert.That(Pages(Parent, Span(va + 2 * Page, Page)).Single().Value.References, Is.EqualTo(3), "image, parent, child");
        AssertHostMirrors(Parent, child);
    }

    [Test]
    public void Disposing_the_image_leaves_mapped_pages_alone_and_refuses_new_maps()
    {
        byte[] contents = Contents(2 * (int)Page);
        var image = VmImage.FromBytes(contents, Pool);
        ulong va = Parent.Map(2 * Page, new AreaBackend.Image(image, 0), Anywhere());

        image.Dispose();
        image.Dispose(); // a second call does nothing

        Assert.That(image.IsDisposed, Is.True);
        Assert.That(Pool.FramesInUse, Is.EqualTo(2), "the mappings keep the frames");
        Assert.That(Read(Parent, va, (int)(2 * Page)).SequenceEqual(contents), Is.True);
        var areas = Parent.Areas;
        Assert.Throws<ObjectDisposedException>(() => Parent.Map(Page, new AreaBackend.Image(image, 0), Anywhere()));
        Assert.That(Parent.Areas, Is.EqualTo(areas));
        Write(Parent, va, [9]); // the last holder: taken over, no copy
        Assert.That(Parent.Stats.CopyOnWriteTakeovers, Is.EqualTo(1));
        Parent.Unmap(Span(va, 2 * Page));
        Pool.Trim();
        Assert.That(Pool.FramesInUse, Is.Zero);
    }

    [Test]
    public void An_image_of_a_file_holds_the_files_bytes()
    {
        string path = Path.Combine(Path.GetTempPath(), $"uvm-image-{Guid.NewGuid():N}");
        byte[] contents = Contents((int)(2 * MiB) + 17);
        File.WriteAllBytes(path, contents);
        try
        {
            VmImage image = Track(VmImage.FromFile(path, Pool));
            Assert.That(image.Length, Is.EqualTo((ulong)contents.Length));
            ulong va = Parent.Map(image.Size, new AreaBackend.Image(image, 0), Anywhere(PageFlags.R));
            Assert.That(Read(Parent, va, contents.Length).SequenceEqual(contents), Is.True);
            ulong tail = Parent.Map(Page, new AreaBackend.Image(image, image.Size - Page), Anywhere(PageFlags.R));
            Assert.That(Read(Parent, tail, 17).SequenceEqual(contents.AsSpan(contents.Length - 17).ToArray()), Is.True);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Test]
    public void A_file_that_cannot_be_read_is_a_specific_error_and_allocates_nothing()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"uvm-image-dir-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        string empty = Path.Combine(dir, "empty");
        File.WriteAllBytes(empty, []);
        try
        {
            Assert.Throws<FileNotFoundException>(() => VmImage.FromFile(Path.Combine(dir, "missing"), Pool));
            Assert.Throws<DirectoryNotFoundException>(() => VmImage.FromFile(Path.Combine(dir, "no", "such"), Pool));
            Assert.Throws<UnauthorizedAccessException>(() => VmImage.FromFile(dir, Pool));
            Assert.Throws<ArgumentException>(() => VmImage.FromFile(empty, Pool));
            Assert.Throws<ArgumentException>(() => VmImage.FromFile("", Pool));
            Assert.Throws<ArgumentNullException>(() => VmImage.FromFile(null!, Pool));
            Assert.That(Pool.FramesInUse, Is.Zero);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Test]
    public void Bad_images_and_offsets_are_specific_errors_and_change_nothing()
    {
        Assert.Throws<ArgumentException>(() => VmImage.FromBytes([], Pool));
        using var big = new FramePool(4 * MiB);
        Assert.That(Assert.Throws<UVmException>(() => VmImage.FromBytes(new byte[5 * MiB], big))!.Error, Is.EqualTo(UVmError.NoMemory));
        Assert.That(big.FramesInUse, Is.Zero);
        using var otherPool = new FramePool(2 * MiB);
        using VmImage foreign = VmImage.FromBytes([1, 2, 3], otherPool);

        VmImage image = NewImage(Contents(3 * (int)Page + 1)); // 4 pages
        ulong lazy = MapLazy(Parent, 4);
        Write(Parent, lazy, [5]);
        List<string> before = Snapshot(Parent, Span(0, GiB));
        IReadOnlyList<VmArea> areas = Parent.Areas;
        long frames = Pool.FramesInUse;

        Assert.Throws<ArgumentException>(() => Parent.Map(Page, new AreaBackend.Image(foreign, 0), Anywhere()));
        Assert.Throws<ArgumentException>(() => Parent.Map(Page, new AreaBackend.Image(null!, 0), Anywhere()));
        foreach (ulong offset in new[] { 1UL, Page - 1, Page + 1, 1UL << 63 | 1, ulong.MaxValue })
            Assert.Throws<ArgumentException>(() => Parent.Map(Page, new AreaBackend.Image(image, offset), Anywhere()), $"offset 0x{offset:x}");
        foreach (ulong offset in new[] { 4 * Page, 5 * Page, 1UL << 47, 1UL << 52, 1UL << 63, ulong.MaxValue - Page + 1 })
            Assert.That(Assert.Throws<UVmException>(() => Parent.Map(Page, new AreaBackend.Image(image, offset), Anywhere()))!.Error,
                Is.EqualTo(UVmError.InvalidArgs), $"offset 0x{offset:x}");
        Assert.That(Assert.Throws<UVmException>(() => Parent.Map(5 * Page, new AreaBackend.Image(image, 0), Anywhere()))!.Error, Is.EqualTo(UVmError.InvalidArgs));
        Assert.That(Assert.Throws<UVmException>(() => Parent.Map(2 * Page, new AreaBackend.Image(image, 3 * Page), Anywhere()))!.Error, Is.EqualTo(UVmError.InvalidArgs));
        foreach (ulong length in new[] { 1UL, Page - 1 })
            Assert.Throws<ArgumentException>(() => Parent.Map(length, new AreaBackend.Image(image, 0), Anywhere()), $"length {length}");
        Assert.That(Assert.Throws<UVmException>(() => Parent.Map(0, new AreaBackend.Image(image, 0), Anywhere()))!.Error, Is.EqualTo(UVmError.InvalidArgs));
        foreach (ulong length in new[] { 1UL << 47, 1UL << 52, 1UL << 63, ulong.MaxValue - Page + 1 })
            Assert.That(Assert.Throws<UVmException>(() => Parent.Map(length, new AreaBackend.Image(image, 0), Anywhere()))!.Error, Is.EqualTo(UVmError.InvalidArgs), $"length 0x{length:x}");
        Assert.That(Assert.Throws<UVmException>(() => Parent.Map(Page, new AreaBackend.Image(image, 0), At(lazy)))!.Error, Is.EqualTo(UVmError.MapAlreadyMappedVaddr));

        Assert.That(Snapshot(Parent, Span(0, GiB)), Is.EqualTo(before));
        Assert.That(Parent.Areas, Is.EqualTo(areas));
        Assert.That(Pool.FramesInUse, Is.EqualTo(frames));
        Assert.That(image.IsDisposed, Is.False);
    }

    [Test]
    public void Part_of_an_image_area_unmapped_and_protected_keeps_the_rest_at_its_offset()
    {
        byte[] contents = Contents(8 * (int)Page);
        VmImage image = NewImage(contents);
        ulong va = Parent.Map(6 * Page, new AreaBackend.Image(image, 2 * Page), Anywhere(PageFlags.R));

        Parent.Unmap(Span(va + Page, Page));
        Parent.Protect(Span(va + 3 * Page, 3 * Page), PageFlags.RW);
        Write(Parent, va + 4 * Page, [0x77]);

        Assert.That(Read(Parent, va, 8).SequenceEqual(contents.AsSpan(2 * (int)Page, 8).ToArray()), Is.True);
        Assert.That(Read(Parent, va + 5 * Page, 8).SequenceEqual(contents.AsSpan(7 * (int)Page, 8).ToArray()), Is.True);
        Assert.That(Read(Parent, va + 4 * Page, 1)[0], Is.EqualTo(0x77));
        AssertFault(TryRead(Parent, va + Page, new byte[1]), va + Page, PageFaultKind.NotPresent);
        Assert.That(Parent.Areas.Select(a => a.Backend).OfType<AreaBackend.Image>().Select(b => b.Offset), Is.EqualTo(new[] { 2 * Page, 4 * Page, 5 * Page }));
    }

    [Test]
    public void Maps_racing_the_images_Dispose_either_map_it_whole_or_fail_disposed()
    {
        byte[] contents = Contents(64 * (int)Page);
        for (int round = 0; round < 20; round++)
        {
            var image = VmImage.FromBytes(contents, Pool);
            AddressSpace[] spaces = [NewAddressSpace(), NewAddressSpace(), NewAddressSpace()];
            var mapped = new ulong?[spaces.Length];
            using var go = new ManualResetEventSlim();
            List<TestThread> threads = TestThread.StartAll(spaces.Length, i => $"mapper {i}", i =>
            {
                Deadlines.Wait(go, "the start");
                try { mapped[i] = spaces[i].Map(64 * Page, new AreaBackend.Image(image, 0), Anywhere(PageFlags.R)); }
                catch (ObjectDisposedException) { }
            });
            go.Set();
            image.Dispose();
            TestThread.JoinAll(threads);
            for (int i = 0; i < spaces.Length; i++)
            {
                if (mapped[i] is { } va)
                    Assert.That(Read(spaces[i], va, contents.Length).SequenceEqual(contents), Is.True, $"round {round}, space {i}");
                else
                    Assert.That(spaces[i].Areas, Is.Empty);
                Assert.That(spaces[i].Space.CheckHostMirror(), Is.Empty);
                spaces[i].Dispose();
            }
            Pool.Trim();
            Assert.That(Pool.FramesInUse, Is.Zero, $"round {round}");
        }
        Parent.Space.Activate();
    }
}
