using NUnit.Framework;
using UVm.Frames;
using UVm.Io;
using UVm.Spaces;

namespace UVm.Tests.Core;

/// <summary>The pool's books: frames in use, host memory really allocated, exhaustion, zeroed reuse.</summary>
public sealed class FramePoolAccounting : SpaceFixture
{
    /// <summary>A pool of exactly one chunk (512 frames), disposed after the test.</summary>
    private FramePool SmallPool() => Later(new FramePool(Huge));

    private static bool AllZero(USegment seg)
    {
        byte[] bytes = new byte[seg.Size];
        VmReader<Infallible> r = seg.Reader();
        r.Read(bytes);
        return bytes.All(b => b == 0);
    }

    [Test]
    public void A_pair_add_ref_counts_both_frames_once()
    {
        var pool = SmallPool();
        using USegment seg = pool.AllocSegment(4);
        ulong even = (seg.Paddr >> 12) % 2 == 0 ? seg.Paddr : seg.Paddr + Page;
        Assert.That((even >> 12) % 2, Is.Zero, "precondition: an even frame number");
        pool.AddRefPair(even);
        Assert.That(pool.ReferenceCount(even), Is.EqualTo(2));
        Assert.That(pool.ReferenceCount(even + Page), Is.EqualTo(2), "the next frame's count, not the same one twice");
        Assert.That(pool.ReferenceCount(even + 2 * Page), Is.EqualTo(1), "no carry into a third");
        pool.Release(even);
        pool.Release(even + Page);
        Assert.That(pool.ReferenceCount(even), Is.EqualTo(1));
        Assert.That(pool.ReferenceCount(even + Page), Is.EqualTo(1));
    }

    [Test]
    public void No_frame_is_in_use_after_every_space_and_handle_is_disposed()
    {
        var pool = Later(new FramePool(16 * MiB));
        using IoMem io = IoMem.CreateAnonymous(Huge);
        for (int round = 0; round < 3; round++)
        {
            var a = new VmSpace(new VmSpaceOptions { Size = GiB, Pool = pool });
            var b = new VmSpace(new VmSpaceOptions { Size = 4 * GiB, Pool = pool });
            using (USegment seg = pool.AllocSegment(100))
            using (UFrame f = pool.AllocFrame())
            {
                using (CursorMut c = a.CursorMut(Span(0, GiB)))
                {
                    c.Map(seg, RW);
                    c.Map(f, RW);
                    c.Jump(Huge * 10);
                    c.MapIoMem(io, RW, Huge, 0);
                }
                using (CursorMut c = b.CursorMut(Span(3 * GiB, Huge)))
                {
                    c.Map(f, R);
                    c.Map(seg, R);
                    c.Jump(3 * GiB);
                    c.ProtectNext(Huge, (ref PageFlags fl, ref CachePolicy ca) => fl = PageFlags.None);
                }
                using (Cursor c = a.Cursor(Span(0, Page)))
                    c.Query().Item!.Dispose();
            }
            Assert.That(pool.FramesInUse, Is.EqualTo(101), "the mappings keep the frames");
            a.Dispose();
            Assert.That(pool.FramesInUse, Is.EqualTo(101), "the other space still maps them");
            b.Dispose();
            Assert.That(pool.FramesInUse, Is.Zero);
        }
    }

    [Test]
    public void Host_allocated_bytes_fall_after_frees_and_Trim()
    {
        var pool = Later(new FramePool(16 * MiB));
        Assert.That(pool.HostAllocatedBytes, Is.Zero, "a fresh pool is a sparse file");
        USegment seg = pool.AllocSegment(256);
        Assert.That(pool.HostAllocatedBytes, Is.Zero, "allocating costs nothing until written");
        VmWriter<Infallible> w = seg.Writer();
        while (w.HasAvail) w.WriteVal(0x5A5A5A5A5A5A5A5AUL);
        Assert.That(pool.HostAllocatedBytes, Is.GreaterThanOrEqualTo((long)MiB));

        seg.Dispose();
        Assert.That(pool.FramesAwaitingPunch, Is.EqualTo(256), "fewer than a batch: not punched yet");
        Assert.That(pool.HostAllocatedBytes, Is.GreaterThanOrEqualTo((long)MiB));

        long punches = pool.PunchCalls;
        pool.Trim();
        Assert.That(pool.PunchCalls, Is.EqualTo(punches + 1), "one contiguous run, one punch");
        Assert.That(pool.FramesAwaitingPunch, Is.Zero);
        Assert.That(pool.HostAllocatedBytes, Is.Zero);
    }

    [Test]
    public void A_full_batch_of_freed_frames_is_punched_without_Trim()
    {
        var pool = Later(new FramePool(16 * MiB));
        USegment seg = pool.AllocSegment(FramePool.PunchBatchFrames);
        VmWriter<Infallible> w = seg.Writer();
        while (w.HasAvail) w.WriteVal(1UL);
        seg.Dispose();
        Assert.That(pool.FramesAwaitingPunch, Is.Zero);
        Assert.That(pool.HostAllocatedBytes, Is.Zero);
    }

    [Test]
    public void Frames_written_through_a_mapping_are_given_back_to_the_host_when_the_space_goes()
    {
        VmSpace space = NewSpace(GiB);
        USegment seg = Pool.AllocSegment(64);
        using (CursorMut c = space.CursorMut(Span(0, seg.Size))) c.Map(seg, RW);
        seg.Dispose();
        HostMaps.TagPages(space, 0, 64 * Page, off => off + 1);
        Assert.That(Pool.HostAllocatedBytes, Is.GreaterThanOrEqualTo((long)(64 * Page)));
        space.Dispose();
        Assert.That(Pool.FramesInUse, Is.Zero);
        Assert.That(Pool.HostAllocatedBytes, Is.Zero, "disposing a space trims the pool");
    }

    [Test]
    public void An_exhausted_pool_throws_NoMemory_and_leaves_the_count_unchanged()
    {
        FramePool pool = SmallPool();
        using USegment all = pool.AllocSegment(512);
        Assert.That(pool.FramesInUse, Is.EqualTo(512));

        Assert.That(Assert.Throws<UVmException>(() => pool.AllocFrame())!.Error, Is.EqualTo(UVmError.NoMemory));
        Assert.That(Assert.Throws<UVmException>(() => pool.AllocSegment(1))!.Error, Is.EqualTo(UVmError.NoMemory));
        Assert.That(pool.FramesInUse, Is.EqualTo(512));
    }

    [Test]
    public void A_segment_larger_than_any_free_run_throws_NoMemory_and_allocates_nothing()
    {
        FramePool pool = SmallPool();
        Assert.That(Assert.Throws<UVmException>(() => pool.AllocSegment(513))!.Error, Is.EqualTo(UVmError.NoMemory));
        Assert.That(pool.FramesInUse, Is.Zero);

        using UFrame one = pool.AllocFrame();
        Assert.That(Assert.Throws<UVmException>(() => pool.AllocSegment(512))!.Error, Is.EqualTo(UVmError.NoMemory));
        Assert.That(pool.FramesInUse, Is.EqualTo(1));
        using USegment rest = pool.AllocSegment(511);
        Assert.That(pool.FramesInUse, Is.EqualTo(512), "the failures leaked nothing: the rest of the pool is still there");
    }

    [Test]
    public void After_exhaustion_freed_frames_can_be_allocated_again()
    {
        FramePool pool = SmallPool();
        USegment all = pool.AllocSegment(512);
        Assert.Throws<UVmException>(() => pool.AllocFrame());
        all.Dispose();
        using USegment again = pool.AllocSegment(512);
        Assert.That(again.Paddr, Is.Zero);
    }

    [Test]
    public void Reused_frames_read_as_zero()
    {
        FramePool pool = SmallPool();
        USegment dirty = pool.AllocSegment(100);
        VmWriter<Infallible> w = dirty.Writer();
        while (w.HasAvail) w.WriteVal(ulong.MaxValue);
        dirty.Dispose();
        Assert.That(pool.FramesAwaitingPunch, Is.EqualTo(100));

        // The only run of 512 frames includes the 100 dirty ones: the pool must punch them first.
        using USegment reused = pool.AllocSegment(512);
        Assert.That(reused.Paddr, Is.Zero);
        Assert.That(AllZero(reused), Is.True);
    }

    [Test]
    public void A_reused_single_frame_reads_as_zero()
    {
        FramePool pool = SmallPool();
        var frames = Enumerable.Range(0, 512).Select(_ => pool.AllocFrame()).ToList();
        try
        {
            UFrame victim = frames[200];
            VmWriter<Infallible> w = victim.Writer();
            w.WriteVal(0x1234UL);
            victim.Dispose();
            frames[200] = pool.AllocFrame();
            Assert.That(frames[200].Paddr, Is.EqualTo(victim.Paddr), "the only free frame");
            Assert.That(TagOf(frames[200]), Is.Zero);
        }
        finally
        {
            frames.ForEach(f => f.Dispose());
        }
    }

    [Test]
    public void Frames_allocated_in_a_row_are_adjacent_and_big_segments_start_on_a_chunk()
    {
        using UFrame a = Pool.AllocFrame();
        using UFrame b = Pool.AllocFrame();
        using USegment small = Pool.AllocSegment(3);
        using USegment big = Pool.AllocSegment(600);
        Assert.That(b.Paddr, Is.EqualTo(a.Paddr + Page));
        Assert.That(small.Paddr, Is.EqualTo(b.Paddr + Page));
        Assert.That(big.Paddr % Huge, Is.Zero);
        Assert.That(big.Size, Is.EqualTo(600 * Page));
    }

    [Test]
    public void A_pool_with_frames_in_use_refuses_to_be_disposed()
    {
        var pool = new FramePool(Huge);
        UFrame f = pool.AllocFrame();
        Assert.Throws<InvalidOperationException>(() => pool.Dispose());
        f.Dispose();
        pool.Dispose();
        pool.Dispose();
        Assert.Throws<ObjectDisposedException>(() => pool.AllocFrame());
    }

    [Test]
    public void The_default_pool_cannot_be_disposed()
    {
        Assert.Throws<InvalidOperationException>(() => FramePool.Default.Dispose());
    }

    [TestCase(0UL)]
    [TestCase(4096UL)]
    [TestCase(3UL << 20)]
    [TestCase(17UL << 40)]
    public void Pool_capacity_must_be_a_positive_multiple_of_2MiB_up_to_16TiB(ulong capacity)
    {
        Assert.Throws<ArgumentException>(() => new FramePool(capacity));
    }

    [Test]
    public void CopyFrames_copies_scattered_frames_into_a_run_through_the_memfd()
    {
        var pool = Later(new FramePool(16 * MiB));
        const int N = 70; // more than one pwritev batch
        var sources = Enumerable.Range(0, N).Select(_ => pool.AllocFrame()).ToList();
        for (int i = 0; i < N; i++)
        {
            VmWriter<Infallible> w = sources[i].Writer();
            w.Write(Enumerable.Repeat((byte)(i + 1), (int)Page).ToArray());
        }
        sources.Reverse(); // copy them in reverse paddr order: the sources are not one run
        using USegment dst = pool.AllocSegment(N);
        long before = pool.HostAllocatedBytes;

        pool.CopyFrames(dst.Paddr, sources.Select(f => f.Paddr).ToArray());

        Assert.That(pool.HostAllocatedBytes - before, Is.EqualTo(N * (long)Page), "the destination pages now exist in the memfd");
        var copy = new byte[dst.Size];
        VmReader<Infallible> r = dst.Reader();
        r.Read(copy);
        for (int i = 0; i < N; i++)
            Assert.That(copy.AsSpan(i * (int)Page, (int)Page).IndexOfAnyExcept((byte)(N - i)), Is.EqualTo(-1), $"destination frame {i}");
        sources.ForEach(f => f.Dispose());
    }
}
