using System.Runtime.InteropServices;
using NUnit.Framework;
using UVm.Areas;
using UVm.Faults;
using UVm.Frames;
using UVm.Host;
using UVm.Io;
using UVm.Spaces;
using UVm.Tests.Reliability;
using UVm.Interop;

namespace UVm.Tests.Hardening;

/// <summary>
/// Findings 9-12, 14 and 15 of the trust-boundary review: cursors and accesses racing
/// <c>Dispose</c>, cursors that block or deadlock their own thread, handles that are dropped.
/// </summary>
[NonParallelizable]
public sealed class HostileRaces
{
    private const ulong Page = Paging.PageSize;
    private FramePool _pool = null!;

    [SetUp]
    public void CreatePool() => _pool = new FramePool(64UL << 20);

    [TearDown]
    public void CheckPool()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        Assert.That(_pool.FramesInUse, Is.Zero, "frames leaked");
        _pool.Dispose();
    }

    private static void WaitUntil(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (!condition())
        {
            if (DateTime.UtcNow > deadline) Assert.Fail($"gave up waiting: {what}");
            Thread.Sleep(1);
        }
    }

    [Test, CancelAfter(90_000)]
    public void A_cursor_that_waited_through_Dispose_is_ObjectDisposed_and_maps_nothing()
    {
        // A 1 TiB space, so a cursor over all of it keeps the root itself.
        var space = new VmSpace(new VmSpaceOptions { Size = 1UL << 40, Pool = _pool });
        nint host = space.HostBase;
        Cursor whole = space.Cursor(new VaddrRange(0, space.Size));
        Assert.That(space.Table.Root.IsLockedForDebug, Is.True, "precondition: the whole-space cursor holds the root");

        Exception? created = null;
        using UFrame secret = _pool.AllocFrame();
        var creator = new Thread(() =>
        {
            try
            {
                using CursorMut c = space.CursorMut(VaddrRange.FromLength(0x40_0000, Page));
                c.Map(secret, PageProperty.New(PageFlags.RW));
            }
            catch (Exception e) { created = e; }
        })
        { IsBackground = true };
        creator.Start();
        WaitUntil(() => space.Table.Root.WaitersForDebug >= 1, "the new cursor waits for the root");

        var disposer = new Thread(() => space.Dispose()) { IsBackground = true };
        disposer.Start();
        WaitUntil(() => space.IsDisposed && space.Table.Root.WaitersForDebug >= 2, "Dispose waits for the root too");

        whole.Dispose();
        Assert.That(creator.Join(30_000) && disposer.Join(30_000), Is.True, "both threads finished");
        Assert.That(created, Is.InstanceOf<ObjectDisposedException>(), "the cursor found the space disposed once it had its locks");
        Assert.That(secret.ReferenceCount, Is.EqualTo(1), "nothing maps the frame");
        Assert.That(ProcMaps.Read((ulong)host, (ulong)host + (1UL << 40)).Where(v => v.Inode == _pool.FileIdentity.Ino), Is.Empty,
            "no frame of the pool is mapped where the arena was");
    }

    [Test, CancelAfter(90_000)]
    public void A_fault_resolution_racing_AddressSpace_Dispose_never_throws_out_of_the_copy()
    {
        int seed = Harness.Seed("dispose race");
        var random = new Random(seed);
        int rounds = 0, raced = 0, completed = 0;
        Exception? escaped = null;
        while (rounds < 4000 && (raced < 20 || rounds < 300))
        {
            rounds++;
            var areas = new AddressSpace(new VmSpaceOptions { Size = 64UL << 20, Pool = _pool });
            ulong va = areas.Map(4UL << 20, new AreaBackend.Alloc(Populate: false), new VmMapOptions { Flags = PageFlags.RW });
            using var go = new ManualResetEventSlim();
            CopyResult? result = null;
            var reader = new Thread(() =>
            {
                try
                {
                    areas.Space.Activate();
                    var r = areas.Space.Reader(va, 4UL << 20);
                    go.Set();
                    result = r.ReadFallible(new byte[4UL << 20]);
                }
                catch (ObjectDisposedException) when (!go.IsSet) { }            // disposed before the reader was made: documented
                catch (UVmException e) when (e.Error == UVmError.AccessDenied && !go.IsSet) { }
                catch (Exception e) { escaped = e; }
                finally { go.Set(); }
            })
            { IsBackground = true };
            reader.Start();
            Assert.That(go.Wait(30_000), Is.True);
            Thread.SpinWait(random.Next(0, 20_000));
            areas.Dispose();
            Assert.That(reader.Join(30_000), Is.True, "the reader finished");
            Assert.That(escaped, Is.Null, $"an exception escaped the copy (round {rounds}, seed {seed}): {escaped}");
            if (result is { } c)
            {
                if (c.IsOk) completed++;
                else
                {
                    raced++;
                    Assert.That(c.Error, Is.EqualTo(UVmError.PageFault));
                    Assert.That(c.Bytes % Page, Is.Zero, "demand-zero pages come whole; the count is exact to the faulting page");
                }
            }
        }
        TestContext.Progress.WriteLine($"[dispose race] {rounds} rounds: {raced} copies cut by Dispose, {completed} completed");
        Assert.That(raced, Is.GreaterThanOrEqualTo(1), "precondition: Dispose really raced some copies");
    }

    [Test, CancelAfter(30_000)]
    public unsafe void A_value_read_through_a_reader_kept_past_Dispose_never_touches_the_host_range()
    {
        var space = new VmSpace(new VmSpaceOptions { Size = 2UL << 20, Pool = _pool });
        space.Activate();
        var reader = space.Reader(0x1000, 8);
        nint host = space.HostBase + 0x1000;
        space.Dispose();

        // Something else takes the address: an anonymous page nobody has touched.
        nint taken = Libc.Mmap(host & ~(nint)(Page - 1), (nuint)Page, Libc.PROT_READ | Libc.PROT_WRITE,
            Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_FIXED_NOREPLACE, -1, 0);
        Assert.That(taken, Is.EqualTo(host), "precondition: the disposed space's address could be taken");
        try
        {
            Assert.That(GuestMemory.IsHostPagePresent(host), Is.False, "precondition: the new page is not yet populated");
            IoResult<ulong> r = reader.ReadVal<ulong>();
            Assert.That(r.Error, Is.EqualTo(UVmError.PageFault));
            Assert.That(GuestMemory.IsHostPagePresent(host), Is.False, "the read did not load from the other mapping (a load would populate it)");
        }
        finally
        {
            Libc.Munmap(taken, (nuint)Page);
        }
    }


    [Test, CancelAfter(60_000)]
    public void A_read_only_cursor_over_an_unmapped_range_blocks_nothing_outside_it()
    {
        using var areas = new AddressSpace(new VmSpaceOptions { Size = 8UL << 30, Pool = _pool });
        ulong lazy = areas.Map(4UL << 20, new AreaBackend.Alloc(Populate: false), new VmMapOptions { Flags = PageFlags.RW, Addr = 5UL << 30 });
        VmSpace space = areas.Space;
        using Cursor held = space.Cursor(VaddrRange.FromLength(1UL << 30, Page)); // nothing mapped there
        Assert.That(space.Table.Root.IsLockedForDebug, Is.False, "it does not keep the root");

        // A second, disjoint cursor of the same thread.
        using (Cursor second = space.Cursor(VaddrRange.FromLength(2UL << 30, Page))) Assert.That(second.Query().Item, Is.Null);

        // A mutable cursor at 3 GiB and a demand-zero fault at 5 GiB, on another thread.
        Exception? failed = null;
        var other = new Thread(() =>
        {
            try
            {
                using UFrame f = _pool.AllocFrame();
                using (CursorMut c = space.CursorMut(VaddrRange.FromLength(3UL << 30, Page))) c.Map(f, PageProperty.New(PageFlags.RW));
                space.Activate();
                var w = space.Writer(lazy, 8);
                Assert.That(w.WriteVal(7UL).IsOk, Is.True);
                using (CursorMut c = space.CursorMut(VaddrRange.FromLength(3UL << 30, Page))) c.Unmap(Page);
            }
            catch (Exception e) { failed = e; }
        })
        { IsBackground = true };
        other.Start();
        Assert.That(other.Join(30_000), Is.True, "the other thread was not blocked by the read-only cursor");
        Assert.That(failed, Is.Null, failed?.ToString());
    }

    [Test, CancelAfter(30_000)]
    public void An_overlapping_cursor_on_the_same_thread_throws_instead_of_hanging()
    {
        using var space = new VmSpace(new VmSpaceOptions { Size = 1UL << 30, Pool = _pool });
        using (CursorMut first = space.CursorMut(VaddrRange.FromLength(0x40_0000, 4 * Page)))
        {
            Assert.Throws<InvalidOperationException>(() => space.CursorMut(VaddrRange.FromLength(0x40_1000, Page)));
            using (Cursor whole = space.Cursor(VaddrRange.FromLength(0, space.Size)))
            {
                // Created above the first cursor's node; walking into it would wait on this thread.
                Assert.Throws<InvalidOperationException>(() => whole.FindNext(space.Size));
                whole.Jump(0);
                Assert.That(whole.Query().Item, Is.Null, "the refused step left the cursor usable elsewhere");
            }
            Assert.Throws<InvalidOperationException>(() => space.Dispose(), "Dispose needs the whole table");
            Assert.That(space.IsDisposed, Is.False, "a refused Dispose changed nothing");
            // The refused attempts left nothing locked: the first cursor still works.
            using UFrame f = _pool.AllocFrame();
            first.Map(f, PageProperty.New(PageFlags.RW));
        }
        Assert.That(Cursor.HeldByCurrentThread, Is.Zero);
        using (Cursor c = space.Cursor(VaddrRange.FromLength(0, space.Size))) { }
        using (CursorMut c = space.CursorMut(VaddrRange.FromLength(0x40_0000, Page))) Assert.That(c.Unmap(Page), Is.EqualTo(1UL));
    }

    [Test, CancelAfter(30_000)]
    public void A_dropped_frame_handle_is_given_back_when_collected()
    {
        using var space = new VmSpace(new VmSpaceOptions { Size = 1UL << 30, Pool = _pool });
        using (UFrame f = _pool.AllocFrame())
        using (CursorMut c = space.CursorMut(VaddrRange.FromLength(0x40_0000, Page)))
            c.Map(f, PageProperty.New(PageFlags.RW));
        DropQueries(space);
        DropAllocations();
        GC.Collect();
        GC.WaitForPendingFinalizers();
        Assert.That(_pool.FramesInUse, Is.EqualTo(1), "only the mapping holds a frame");
        using (CursorMut c = space.CursorMut(VaddrRange.FromLength(0x40_0000, Page))) c.Unmap(Page);
        Assert.That(_pool.FramesInUse, Is.Zero);
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static void DropQueries(VmSpace space)
    {
        for (int i = 0; i < 10; i++)
        {
            using Cursor c = space.Cursor(VaddrRange.FromLength(0x40_0000, Page));
            Assert.That(c.Query().Item, Is.InstanceOf<MappedRam>()); // its frame handle is never disposed
        }
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private void DropAllocations()
    {
        for (int i = 0; i < 10; i++) _pool.AllocFrame();
        _pool.AllocSegment(7);
    }
}
