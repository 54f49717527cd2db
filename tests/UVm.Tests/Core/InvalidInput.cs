using NUnit.Framework;
using UVm.Frames;
using UVm.Spaces;

namespace UVm.Tests.Core;

/// <summary>
/// Bad input fails with its specific exception and leaves everything as it was: the page table
/// (same query results), the host (mirror consistent), the pool (same frames in use) and the cursor.
/// </summary>
public sealed class InvalidInput : SpaceFixture
{
    private static readonly VaddrRange Watched = Span(0, 2 * Huge);

    private UFrame _frame = null!;
    private USegment _segment = null!;
    private List<string> _before = null!;
    private long _inUse;

    /// <summary>Some state to keep: a frame at one page, a 4-frame segment at 2 MiB.</summary>
    [SetUp]
    public void MapSomething()
    {
        _frame = TaggedFrame(0xF);
        _segment = Pool.AllocSegment(4);
        MapAt(Page, _frame);
        MapAt(Huge, _segment);
        _before = Snapshot(Watched);
        _inUse = Pool.FramesInUse;
    }

    [TearDown]
    public void DropHandles()
    {
        _frame.Dispose();
        _segment.Dispose();
    }

    private void AssertUnchanged()
    {
        Assert.That(Snapshot(Watched), Is.EqualTo(_before), "the page table changed");
        Assert.That(Pool.FramesInUse, Is.EqualTo(_inUse), "frames were allocated or freed");
        Assert.That(_frame.ReferenceCount, Is.EqualTo(2));
        HostMaps.AssertMirrored(Space);
        HostMaps.AssertMapsFrame(Space, Page, _frame.Paddr, "rw-s");
    }

    private static void AssertInvalidArgs(Action call) =>
        Assert.That(Assert.Throws<UVmException>(call)!.Error, Is.EqualTo(UVmError.InvalidArgs));

    private static void Noop(ref PageFlags f, ref CachePolicy c) => f = PageFlags.None;

    [TestCase(0x1001UL, 0x2000UL)]
    [TestCase(0x1000UL, 0x2001UL)]
    [TestCase(0x0800UL, 0x0800UL + 0x1000UL)]
    public void An_unaligned_range_throws_ArgumentException(ulong start, ulong end)
    {
        Assert.Throws<ArgumentException>(() => Space.Cursor(new VaddrRange(start, end)));
        Assert.Throws<ArgumentException>(() => Space.CursorMut(new VaddrRange(start, end)));
        AssertUnchanged();
    }

    [TestCase(GiB - Page, GiB + Page)]
    [TestCase(GiB, GiB + Page)]
    [TestCase(0UL, ulong.MaxValue & ~(Page - 1))]
    public void A_range_beyond_the_space_is_InvalidArgs(ulong start, ulong end)
    {
        AssertInvalidArgs(() => Space.Cursor(new VaddrRange(start, end)));
        AssertInvalidArgs(() => Space.CursorMut(new VaddrRange(start, end)));
        AssertUnchanged();
    }

    [Test]
    public void A_range_whose_end_overflows_is_InvalidArgs()
    {
        AssertInvalidArgs(() => VaddrRange.FromLength(ulong.MaxValue & ~(Page - 1), 2 * Page));
        AssertInvalidArgs(() => VaddrRange.FromLength(Page, ulong.MaxValue & ~(Page - 1)));
        // Built by hand, the wrapped range reads as reversed, hence empty.
        AssertInvalidArgs(() => Space.CursorMut(new VaddrRange(ulong.MaxValue & ~(Page - 1), Page)));
        AssertUnchanged();
    }

    [Test]
    public void An_empty_or_reversed_range_is_InvalidArgs()
    {
        AssertInvalidArgs(() => Space.Cursor(new VaddrRange(Page, Page)));
        AssertInvalidArgs(() => Space.CursorMut(new VaddrRange(Page, Page)));
        AssertInvalidArgs(() => Space.CursorMut(default));
        AssertInvalidArgs(() => Space.CursorMut(new VaddrRange(2 * Page, Page)));
        AssertUnchanged();
    }

    [Test]
    public void Unmap_longer_than_the_cursors_range_throws_and_unmaps_nothing()
    {
        using (CursorMut c = Space.CursorMut(Span(Page, Page)))
        {
            Assert.Throws<ArgumentOutOfRangeException>(() => c.Unmap(2 * Page));
            Assert.That(c.VirtAddr, Is.EqualTo(Page));
            Assert.That(c.Flusher.PendingOps, Is.Zero);
        }
        using (CursorMut c = Space.CursorMut(Span(Huge, 4 * Page)))
        {
            c.Jump(Huge + 2 * Page);
            Assert.Throws<ArgumentOutOfRangeException>(() => c.Unmap(3 * Page));
            Assert.That(c.VirtAddr, Is.EqualTo(Huge + 2 * Page));
        }
        AssertUnchanged();
    }

    [Test]
    public void Unmap_of_an_unaligned_length_throws_ArgumentException_and_unmaps_nothing()
    {
        using (CursorMut c = Space.CursorMut(Span(Page, Page)))
        {
            Assert.Throws<ArgumentException>(() => c.Unmap(100));
            Assert.That(c.VirtAddr, Is.EqualTo(Page));
        }
        AssertUnchanged();
    }

    [Test]
    public void ProtectNext_past_the_end_or_unaligned_throws_and_changes_nothing()
    {
        using (CursorMut c = Space.CursorMut(Span(Page, Page)))
        {
            bool called = false;
            Assert.Throws<ArgumentOutOfRangeException>(() => c.ProtectNext(2 * Page, (ref PageFlags f, ref CachePolicy cp) => called = true));
            Assert.Throws<ArgumentException>(() => c.ProtectNext(Page - 1, (ref PageFlags f, ref CachePolicy cp) => called = true));
            Assert.Throws<ArgumentNullException>(() => c.ProtectNext(Page, null!));
            Assert.That(called, Is.False);
            Assert.That(c.VirtAddr, Is.EqualTo(Page));
            Assert.That(c.Flusher.PendingOps, Is.Zero);
        }
        AssertUnchanged();
    }

    [Test]
    public void Jump_out_of_range_is_InvalidArgs_and_keeps_the_position()
    {
        using (CursorMut c = Space.CursorMut(Span(Huge, 4 * Page)))
        {
            c.Jump(Huge + Page);
            AssertInvalidArgs(() => c.Jump(Huge + 4 * Page));
            AssertInvalidArgs(() => c.Jump(Page));
            Assert.Throws<ArgumentException>(() => c.Jump(Huge + 5));
            Assert.That(c.VirtAddr, Is.EqualTo(Huge + Page));
            Assert.That(Describe(c.Query()), Is.EqualTo($"{Span(Huge + Page, Page)} ram 0x{_segment.Paddr + Page:x} {RW}"));
        }
        AssertUnchanged();
    }

    [Test]
    public void FindNext_past_the_end_throws_and_keeps_the_position()
    {
        using (CursorMut c = Space.CursorMut(Span(0, 2 * Page)))
        {
            Assert.Throws<ArgumentOutOfRangeException>(() => c.FindNext(3 * Page));
            Assert.That(c.VirtAddr, Is.Zero);
            Assert.That(c.FindNext(2 * Page), Is.EqualTo(Page));
        }
        AssertUnchanged();
    }

    [Test]
    public void Map_past_the_end_throws_and_takes_no_reference()
    {
        using UFrame extra = Pool.AllocFrame();
        _inUse++;
        using (CursorMut c = Space.CursorMut(Span(3 * Page, 2 * Page)))
        {
            Assert.That(c.Unmap(2 * Page), Is.Zero, "exhausts the cursor over holes");
            Assert.Throws<ArgumentOutOfRangeException>(() => c.Map(extra, RW));
            Assert.That(extra.ReferenceCount, Is.EqualTo(1));
            Assert.That(c.Flusher.PendingOps, Is.Zero);
        }
        AssertUnchanged();
    }

    [Test]
    public void Map_of_a_segment_that_does_not_fit_maps_none_of_it()
    {
        using USegment big = Pool.AllocSegment(4);
        _inUse += 4;
        using (CursorMut c = Space.CursorMut(Span(4 * Page, 3 * Page)))
        {
            Assert.Throws<ArgumentOutOfRangeException>(() => c.Map(big, RW));
            Assert.That(c.VirtAddr, Is.EqualTo(4 * Page));
            Assert.That(c.Flusher.PendingOps, Is.Zero);
        }
        for (ulong i = 0; i < 4; i++) Assert.That(Pool.ReferenceCount(big.Paddr + i * Page), Is.EqualTo(1));
        AssertUnchanged();
    }

    [Test]
    public void Map_of_a_frame_or_segment_from_another_pool_throws_ArgumentException()
    {
        using var otherPool = new FramePool(Huge);
        using (UFrame alien = otherPool.AllocFrame())
        using (USegment alienSeg = otherPool.AllocSegment(2))
        using (CursorMut c = Space.CursorMut(Span(Page, 2 * Page)))
        {
            Assert.Throws<ArgumentException>(() => c.Map(alien, RW));
            Assert.Throws<ArgumentException>(() => c.Map(alienSeg, RW));
            Assert.That(alien.ReferenceCount, Is.EqualTo(1));
            Assert.That(c.VirtAddr, Is.EqualTo(Page));
        }
        Assert.That(otherPool.FramesInUse, Is.Zero);
        AssertUnchanged();
    }

    [Test]
    public void Null_arguments_throw_ArgumentNullException()
    {
        using (CursorMut c = Space.CursorMut(Span(Page, Page)))
        {
            Assert.Throws<ArgumentNullException>(() => c.Map((UFrame)null!, RW));
            Assert.Throws<ArgumentNullException>(() => c.Map((USegment)null!, RW));
            Assert.Throws<ArgumentNullException>(() => c.MapIoMem(null!, RW, Page, 0));
        }
        AssertUnchanged();
    }

    [Test]
    public void MapIoMem_with_a_bad_length_or_offset_throws_and_keeps_no_region()
    {
        using IoMem io = IoMem.CreateAnonymous(Huge);
        using (CursorMut c = Space.CursorMut(Span(4 * Page, 2 * Page)))
        {
            Assert.Throws<ArgumentException>(() => c.MapIoMem(io, RW, Page + 1, 0));
            Assert.Throws<ArgumentException>(() => c.MapIoMem(io, RW, Page, 17));
            Assert.Throws<ArgumentOutOfRangeException>(() => c.MapIoMem(io, RW, 3 * Page, 0));
            Assert.That(c.VirtAddr, Is.EqualTo(4 * Page));
            Assert.That(c.FindIoMemByPaddr(io.Paddr), Is.Null, "a refused region is not kept by the space");
        }
        AssertUnchanged();
    }

    [Test]
    public void A_disposed_cursor_throws_ObjectDisposed_on_every_use()
    {
        using IoMem io = IoMem.CreateAnonymous(Page);
        CursorMut c = Space.CursorMut(Span(Page, 2 * Page));
        c.Dispose();
        Assert.Throws<ObjectDisposedException>(() => c.Query());
        Assert.Throws<ObjectDisposedException>(() => _ = c.VirtAddr);
        Assert.Throws<ObjectDisposedException>(() => c.Jump(Page));
        Assert.Throws<ObjectDisposedException>(() => c.FindNext(Page));
        Assert.Throws<ObjectDisposedException>(() => c.GetEnumerator().MoveNext());
        Assert.Throws<ObjectDisposedException>(() => c.Map(_frame, RW));
        Assert.Throws<ObjectDisposedException>(() => c.Map(_segment, RW));
        Assert.Throws<ObjectDisposedException>(() => c.MapIoMem(io, RW, Page, 0));
        Assert.Throws<ObjectDisposedException>(() => c.Unmap(Page));
        Assert.Throws<ObjectDisposedException>(() => c.ProtectNext(Page, Noop));
        Assert.Throws<ObjectDisposedException>(() => _ = c.Flusher);
        Assert.Throws<ObjectDisposedException>(() => c.FindIoMemByPaddr(io.Paddr));

        Cursor r = Space.Cursor(Span(Page, Page));
        r.Dispose();
        Assert.Throws<ObjectDisposedException>(() => r.Query());
        Assert.Throws<ObjectDisposedException>(() => r.FindNext(Page));
        AssertUnchanged();
    }

    [Test]
    public void A_disposed_space_refuses_cursors_and_activation()
    {
        VmSpace space = NewSpace(64 * MiB);
        MapAt(space, 0, _frame);
        space.Dispose();
        Assert.That(space.IsDisposed, Is.True);
        Assert.Throws<ObjectDisposedException>(() => space.Cursor(Span(0, Page)));
        Assert.Throws<ObjectDisposedException>(() => space.CursorMut(Span(0, Page)));
        Assert.Throws<ObjectDisposedException>(() => space.Activate());
        Assert.That(_frame.ReferenceCount, Is.EqualTo(2), "the disposed space returned its reference");
        AssertUnchanged();
    }

    [Test]
    public void A_disposed_frame_handle_cannot_be_cloned_read_written_or_mapped()
    {
        UFrame handle = _frame.Clone();
        handle.Dispose();
        Assert.Throws<ObjectDisposedException>(() => handle.Clone());
        Assert.Throws<ObjectDisposedException>(() => handle.Reader());
        Assert.Throws<ObjectDisposedException>(() => handle.Writer());
        using (CursorMut c = Space.CursorMut(Span(4 * Page, Page)))
        {
            Assert.Throws<ObjectDisposedException>(() => c.Map(handle, RW));
            Assert.That(c.VirtAddr, Is.EqualTo(4 * Page));
        }
        AssertUnchanged();
    }

    [Test]
    public void A_disposed_segment_handle_cannot_be_used()
    {
        USegment seg = Pool.AllocSegment(2);
        seg.Dispose();
        Assert.Throws<ObjectDisposedException>(() => seg.FrameAt(0));
        Assert.Throws<ObjectDisposedException>(() => seg.Reader());
        Assert.Throws<ObjectDisposedException>(() => seg.Writer());
        using (CursorMut c = Space.CursorMut(Span(4 * Page, 2 * Page)))
            Assert.Throws<ObjectDisposedException>(() => c.Map(seg, RW));
        AssertUnchanged();
    }

    [Test]
    public void Double_Dispose_is_harmless()
    {
        UFrame clone = _frame.Clone();
        clone.Dispose();
        clone.Dispose();
        Assert.That(_frame.ReferenceCount, Is.EqualTo(2), "the second Dispose dropped no reference");

        using UFrame kept = _segment.FrameAt(0);
        USegment seg = Pool.AllocSegment(1);
        seg.Dispose();
        seg.Dispose();
        Assert.That(kept.ReferenceCount, Is.EqualTo(3), "an unrelated frame is untouched");

        CursorMut c = Space.CursorMut(Span(4 * Page, Page));
        c.Dispose();
        c.Dispose();
        Assert.That(Cursor.HeldByCurrentThread, Is.Zero, "the cursor was released once");

        VmSpace space = NewSpace(64 * MiB);
        MapAt(space, 0, _frame);
        space.Dispose();
        space.Dispose();
        Assert.That(_frame.ReferenceCount, Is.EqualTo(2));

        IoMem io = IoMem.CreateAnonymous(Page);
        io.Dispose();
        io.Dispose();
        Assert.That(io.IsOpen, Is.False);

        MappedRam ram;
        using (Cursor q = Space.Cursor(Span(Page, Page))) ram = (MappedRam)q.Query().Item!;
        ram.Dispose();
        ram.Dispose();
        Assert.That(_frame.ReferenceCount, Is.EqualTo(2), "a queried item disposed twice dropped one reference");
        AssertUnchanged();
    }

    [TestCase(0UL)]
    [TestCase(4096UL)]
    [TestCase(3UL << 20)]
    [TestCase((1UL << 47) + (2UL << 20))]
    public void Space_size_must_be_a_positive_multiple_of_2MiB_up_to_128TiB(ulong size)
    {
        Assert.Throws<ArgumentException>(() => new VmSpace(new VmSpaceOptions { Size = size, Pool = Pool }));
        AssertUnchanged();
    }

    [Test]
    public void An_unaligned_guard_size_throws_ArgumentException()
    {
        Assert.Throws<ArgumentException>(() => new VmSpace(new VmSpaceOptions { Size = Huge, HostGuardSize = 100, Pool = Pool }));
    }

    [Test]
    public void AllocSegment_of_zero_frames_throws_ArgumentOutOfRange()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => Pool.AllocSegment(0));
        AssertUnchanged();
    }

    [Test]
    public void An_IoMem_of_zero_or_unaligned_size_or_offset_throws_ArgumentException()
    {
        Assert.Throws<ArgumentException>(() => IoMem.CreateAnonymous(0));
        Assert.Throws<ArgumentException>(() => IoMem.CreateAnonymous(Page + 1));
        Assert.Throws<ArgumentException>(() => IoMem.FromFile(0, 1, Page));
        Assert.Throws<ArgumentException>(() => IoMem.FromFile(0, 0, 0));
    }

    [Test]
    public void An_IoMem_of_a_closed_descriptor_throws_InvalidOperation()
    {
        Assert.Throws<InvalidOperationException>(() => IoMem.FromFile(-1, 0, Page));
    }
}
