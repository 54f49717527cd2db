using NUnit.Framework;
using UVm.Frames;
using UVm.Io;
using UVm.Spaces;
using UVm.Tests.Core;

namespace UVm.Tests.Hardening;

/// <summary>
/// Findings 1-5 of the trust-boundary review: integers an attacker picks (counts, physical
/// addresses, guard sizes, file sizes and offsets) and a host that refuses a mapping. Each
/// must end in a documented exception with nothing changed, never in a wrapped count or a
/// half-made state.
/// </summary>
[NonParallelizable]
public sealed class HostileInputs : SpaceFixture
{
    [TestCase(ulong.MaxValue)]
    [TestCase(ulong.MaxValue - 1)]
    [TestCase(1UL << 63)]
    [TestCase((1UL << 52) + 1)]
    [TestCase(1UL << 47)]
    [TestCase(16385UL)] // one more than the pool's 16,384 frames
    public void A_segment_larger_than_the_pool_is_NoMemory_and_allocates_nothing(ulong frames)
    {
        long before = Pool.FramesInUse;
        var e = Assert.Throws<UVmException>(() => Pool.AllocSegment(frames));
        Assert.That(e!.Error, Is.EqualTo(UVmError.NoMemory));
        Assert.That(Pool.FramesInUse, Is.EqualTo(before), "nothing allocated, no count wrapped");
        using USegment whole = Pool.AllocSegment(Pool.TotalFrames);
        Assert.That(whole.Size, Is.EqualTo(Pool.Capacity), "the largest segment is still the whole pool");
    }

    [TestCase(64UL << 20)] // == Capacity
    [TestCase((64UL << 20) + 4096)]
    [TestCase(1UL << 52)]
    [TestCase(1UL << 60)]
    [TestCase(1UL << 63)]
    [TestCase(ulong.MaxValue)]
    public void A_reference_count_outside_the_pool_is_ArgumentOutOfRange(ulong paddr)
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => Pool.ReferenceCount(paddr));
        Assert.That(Pool.ReferenceCount(Pool.Capacity - 1), Is.Zero, "the last byte of the pool is still inside it");
    }

    [Test]
    public void A_reference_count_after_the_pool_is_disposed_is_ObjectDisposed()
    {
        var pool = new FramePool(2UL << 20);
        UFrame frame = pool.AllocFrame();
        ulong paddr = frame.Paddr;
        frame.Dispose();
        pool.Dispose();
        Assert.Throws<ObjectDisposedException>(() => pool.ReferenceCount(paddr));
        Assert.Throws<ObjectDisposedException>(() => _ = frame.ReferenceCount);
        Assert.Throws<ObjectDisposedException>(() => pool.AllocFrame());
        Assert.Throws<ObjectDisposedException>(() => pool.AllocSegment(1));
    }

    [TestCase(ulong.MaxValue - 4095)]            // Size + HostGuardSize wraps to a few KiB
    [TestCase(ulong.MaxValue - (2UL << 20) + 1)]
    [TestCase(1UL << 63)]
    [TestCase(VmSpaceOptions.MaxHostGuardSize + 4096)]
    public void A_guard_that_would_wrap_the_arena_is_refused(ulong guard)
    {
        Assert.That(Paging.IsAligned(guard), Is.True, "precondition: only the size is wrong, not the alignment");
        Assert.Throws<ArgumentException>(() => new VmSpace(new VmSpaceOptions { Size = 2UL << 20, HostGuardSize = guard, Pool = Pool }));
        using var ok = new VmSpace(new VmSpaceOptions { Size = 2UL << 20, HostGuardSize = VmSpaceOptions.MaxHostGuardSize, Pool = Pool });
        Assert.That(ok.Size, Is.EqualTo(2UL << 20));
    }

    [TestCase(ulong.MaxValue - 4095)]
    [TestCase(1UL << 63)]
    [TestCase(IoMem.MaxSize + 4096)]
    public void An_IoMem_size_near_2_to_the_64_is_refused_and_takes_no_physical_range(ulong size)
    {
        using var probeBefore = IoMem.CreateAnonymous(4096);
        Assert.Throws<ArgumentOutOfRangeException>(() => IoMem.FromFile(FdOf(probeBefore), 0, size));
        Assert.Throws<ArgumentOutOfRangeException>(() => IoMem.CreateAnonymous(size));
        using var probeAfter = IoMem.CreateAnonymous(4096);
        // The refused regions took no physical addresses: the next region follows the last one.
        Assert.That(probeAfter.Paddr, Is.EqualTo(probeBefore.Paddr + 2 * Paging.HugePageSize));
        Assert.That(probeBefore.Contains(probeAfter.Paddr) || probeAfter.Contains(probeBefore.Paddr), Is.False);
    }

    [TestCase(1UL << 63)]
    [TestCase(ulong.MaxValue - 4095)]
    [TestCase((1UL << 63) - 4096)] // offset + size passes 2^63 - 1
    public void An_IoMem_file_offset_past_the_largest_offset_is_refused(ulong offset)
    {
        using var io = IoMem.CreateAnonymous(4096);
        Assert.Throws<ArgumentOutOfRangeException>(() => IoMem.FromFile(FdOf(io), offset, 8192));
    }

    [Test]
    public void Every_IoMem_gets_a_physical_range_of_its_own_within_the_entry_address_field()
    {
        using var a = IoMem.CreateAnonymous(1UL << 40); // sparse: costs no memory
        using var b = IoMem.CreateAnonymous(4096);
        Assert.That(b.Paddr, Is.GreaterThanOrEqualTo(a.Paddr + a.Size), "b lies after a, not inside it");
        Assert.That(b.Paddr + b.Size, Is.LessThanOrEqualTo(1UL << 52), "a page-table entry can name it");
    }

    [Test]
    public void Mapping_a_read_only_file_writable_is_refused_before_the_table_changes()
    {
        string path = Path.GetTempFileName();
        try
        {
            File.WriteAllBytes(path, new byte[8192]);
            using var file = new FileStream(path, FileMode.Open, FileAccess.Read);
            using var io = IoMem.FromFile((int)file.SafeFileHandle.DangerousGetHandle(), 0, 8192);
            var before = Snapshot(Span(0, 4 * MiB));
            using (CursorMut c = Space.CursorMut(Span(MiB, 2 * Page)))
                Assert.Throws<ArgumentException>(() => c.MapIoMem(io, RW, 2 * Page, 0));
            Assert.That(Snapshot(Span(0, 4 * MiB)), Is.EqualTo(before));
            Assert.That(Space.CheckHostMirror(), Is.Empty);

            // Read-only works, and reads the file.
            using (CursorMut c = Space.CursorMut(Span(MiB, 2 * Page))) c.MapIoMem(io, R, 2 * Page, 0);
            Space.Activate();
            var reader = Space.Reader(MiB, 8);
            Assert.That(reader.ReadVal<ulong>().IsOk, Is.True);
            Assert.That(Space.CheckHostMirror(), Is.Empty);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Test]
    public void A_read_only_file_made_writable_by_protect_is_refused_by_the_host_and_undone()
    {
        string path = Path.GetTempFileName();
        try
        {
            File.WriteAllBytes(path, new byte[8192]);
            using var file = new FileStream(path, FileMode.Open, FileAccess.Read);
            using var io = IoMem.FromFile((int)file.SafeFileHandle.DangerousGetHandle(), 0, 8192);
            using (CursorMut c = Space.CursorMut(Span(MiB, 2 * Page))) c.MapIoMem(io, R, 2 * Page, 0);
            var before = Snapshot(Span(0, 4 * MiB));

            var c2 = Space.CursorMut(Span(MiB, 2 * Page));
            Assert.That(c2.ProtectNext(2 * Page, (ref PageFlags f, ref CachePolicy _) => f |= PageFlags.W), Is.Not.Null);
            var e = Assert.Throws<UVmException>(() => c2.Flusher.DispatchTlbFlush());
            Assert.That(e!.Error, Is.EqualTo(UVmError.HostRefused), "mprotect(PROT_WRITE) of a read-only shared file mapping is EACCES");
            c2.Dispose();

            Assert.That(Snapshot(Span(0, 4 * MiB)), Is.EqualTo(before), "the refused batch was undone in the page table");
            Assert.That(Space.CheckHostMirror(), Is.Empty, "and the host mirrors the table again");
            Space.Activate();
            var reader = Space.Reader(MiB, 8);
            Assert.That(reader.ReadVal<ulong>().IsOk, Is.True, "later reads work");
            using VmSpace child = Space.ForkCopyOnWrite();
            Assert.That(child.CheckHostMirror(), Is.Empty, "and so does a fork");
        }
        finally
        {
            File.Delete(path);
        }
    }

    private static int FdOf(IoMem io) => io.Fd;
}
