using NUnit.Framework;
using UVm.Areas;
using UVm.Faults;
using UVm.Io;
using UVm.Spaces;
using static UVm.Tests.Areas.GuestValues;
using UVm.Tests.TestSupport;

namespace UVm.Tests.Areas;

/// <summary>
/// On-demand areas: a page is filled by the area's callback on its first access (the
/// userfaultfd model), beside lazy and image areas in the same address space; a declined fill
/// fails the access exactly; a throwing one propagates; filled pages are private frames.
/// </summary>
[TestFixture, NonParallelizable, CancelAfter(120_000)]
public sealed class OnDemandAreas : AreaFixture
{
    /// <summary>What a page at <paramref name="va"/> is filled with: its address, then a byte pattern of it.</summary>
    private static void Stamp(ulong va, Span<byte> page)
    {
        page.Fill((byte)(va >> 12 | 1));
        BitConverter.TryWriteBytes(page, va);
    }

    private static byte[] Stamped(ulong va)
    {
        var page = new byte[Page];
        Stamp(va, page);
        return page;
    }

    /// <summary>A callback that stamps every page and records the calls.</summary>
    private sealed class Recorder
    {
        public readonly List<ulong> Calls = new();
        public bool SawZeroedPage = true;

        public bool Fill(ulong va, Span<byte> page)
        {
            lock (Calls) Calls.Add(va);
            if (page.Length != (int)Page || page.ContainsAnyExcept((byte)0)) SawZeroedPage = false;
            Stamp(va, page);
            return true;
        }
    }

    [Test]
    public void Pages_are_filled_by_the_callback_on_first_access_once_each()
    {
        var rec = new Recorder();
        ulong va = Parent.Map(8 * Page, new AreaBackend.OnDemand(rec.Fill), Anywhere());
        Assert.That(Pool.FramesInUse, Is.Zero, "nothing until touched");

        byte[] read = Read(Parent, va + Page + 100, (int)(2 * Page)); // pages 1, 2 and 3
        Write(Parent, va + 2 * Page, [0xAB]);
        Read(Parent, va + Page, 8);

        Assert.That(rec.Calls, Is.EqualTo(new[] { va + Page, va + 2 * Page, va + 3 * Page }), "each page once, page aligned");
        Assert.That(rec.SawZeroedPage, Is.True, "a zeroed page of 4096 bytes");
        Assert.That(read.SequenceEqual(Stamped(va + Page).Skip(100).Concat(Stamped(va + 2 * Page)).Concat(Stamped(va + 3 * Page).Take(100))), Is.True);
        Assert.That(Read(Parent, va + 2 * Page, 1)[0], Is.EqualTo(0xAB));
        Assert.That(Parent.Stats.OnDemandFills, Is.EqualTo(3));
        Assert.That(Parent.Stats.DemandZeroFaults, Is.Zero);
        Assert.That(Pool.FramesInUse, Is.EqualTo(3));
        Assert.That(Pages(Parent, Span(va, 8 * Page)).Keys, Is.EquivalentTo(new[] { va + Page, va + 2 * Page, va + 3 * Page }));
    }

    [Test]
    public void A_declined_fill_fails_the_access_with_the_exact_count_and_maps_nothing()
    {
        ulong va = Parent.Map(4 * Page, new AreaBackend.OnDemand((p, page) => { Stamp(p, page); return p != DeclinedAt; }), At(GiB / 2));

        CopyResult r = TryRead(Parent, DeclinedAt - 10, new byte[20]);

        AssertFault(r, DeclinedAt, PageFaultKind.NotPresent, bytesDone: 10);
        Assert.That(Parent.Stats.OnDemandDeclined, Is.EqualTo(1));
        Assert.That(Parent.Stats.OnDemandFills, Is.EqualTo(1), "the page before it");
        Assert.That(Pool.FramesInUse, Is.EqualTo(1), "the declined page's frame went back");
        Assert.That(PageAt(Parent, DeclinedAt), Is.Null);
        Assert.That(va, Is.EqualTo(GiB / 2));
    }

    private const ulong DeclinedAt = GiB / 2 + 2 * Paging.PageSize;

    [Test]
    public void A_throwing_fill_propagates_out_of_the_access_and_maps_nothing()
    {
        int calls = 0;
        ulong va = Parent.Map(4 * Page, new AreaBackend.OnDemand((p, page) =>
        {
            page.Fill(0xFF);
            if (++calls == 1) throw new UVmException(UVmError.NoMemory, "the network is down"); // not taken for the handler's own refusal
            Stamp(p, page);
            return true;
        }), Anywhere());

        var e = Assert.Throws<UVmException>(() => TryRead(Parent, va, new byte[8]));
        Assert.That(e!.Message, Does.Contain("the network is down"));
        Assert.That(Pool.FramesInUse, Is.Zero);
        Assert.That(PageAt(Parent, va), Is.Null);
        Assert.That(Cursor.HeldByCurrentThread, Is.Zero);
        Assert.That(Read(Parent, va, (int)Page).SequenceEqual(Stamped(va)), Is.True, "the next access fills it");
        Assert.That(Prefault(va + Page), Is.True, "prefault fills too");
        Assert.That(calls, Is.EqualTo(3));
    }

    private bool Prefault(ulong va)
    {
        Parent.Prefault(Span(va, Page), PageFaultAccess.Read);
        return PageAt(Parent, va) is not null;
    }

    [Test]
    public void A_fill_that_touches_its_own_space_gets_a_fault_and_another_space_resolves()
    {
        AddressSpace other = NewAddressSpace();
        ulong lazy = MapLazy(other, 1);
        ulong guard = Parent.Map(Page, new AreaBackend.Guard(), Anywhere());
        CopyResult? own = null;
        ulong va = 0;
        va = Parent.Map(2 * Page, new AreaBackend.OnDemand((p, page) =>
        {
            // Its own space: not resolved (nested), the exact fault comes back; another space: resolved.
            own = ReadFallibleOf(Parent.Space, va + Page, 8, new byte[8]);
            other.Space.Activate();
            ulong v = ReadValOf<ulong>(other.Space, lazy, 8).Unwrap();
            Parent.Space.Activate();
            Stamp(p, page);
            return v == 0;
        }), Anywhere());

        Assert.That(Read(Parent, va, 8).SequenceEqual(Stamped(va).Take(8)), Is.True);
        AssertFault(own!.Value, va + Page, PageFaultKind.NotPresent);
        Assert.That(other.Stats.DemandZeroFaults, Is.EqualTo(1));
        Assert.That(PageAt(Parent, va + Page), Is.Null);
        Assert.That(guard, Is.Not.Zero);
        AssertHostMirrors(Parent, other);
    }

    [Test]
    public void A_fill_that_disposes_its_space_fails_the_access_and_leaks_nothing()
    {
        AddressSpace victim = NewAddressSpace();
        ulong va = victim.Map(2 * Page, new AreaBackend.OnDemand((p, page) => { victim.Dispose(); Stamp(p, page); return true; }), Anywhere());

        CopyResult r = TryRead(victim, va, new byte[8]);

        Assert.That(r.Error, Is.EqualTo(UVmError.PageFault));
        Assert.That(r.Bytes, Is.Zero);
        Assert.That(victim.Space.IsDisposed, Is.True);
        Parent.Space.Activate();
        Pool.Trim();
        Assert.That(Pool.FramesInUse, Is.Zero);
    }

    [Test]
    public void Threads_faulting_on_one_page_with_a_slow_fill_see_it_filled_once()
    {
        var rec = new Recorder();
        ulong va = Parent.Map(4 * Page, new AreaBackend.OnDemand((p, page) => { Thread.Sleep(2); return rec.Fill(p, page); }), Anywhere());
        var results = new ulong[4];
        List<TestThread> threads = TestThread.StartAll(4, i => $"reader {i}", i =>
        {
            Parent.Space.Activate();
            results[i] = ReadValOf<ulong>(Parent.Space, va + 8, 8).Unwrap();
        });
        TestThread.JoinAll(threads);

        Assert.That(rec.Calls, Is.EqualTo(new[] { va }));
        Assert.That(results, Is.All.EqualTo(BitConverter.ToUInt64(Stamped(va), 8)));
    }

    [Test]
    public void Fills_of_different_regions_run_on_the_faulting_threads_in_parallel()
    {
        int inside = 0, most = 0;
        var threadsSeen = new HashSet<int>();
        using var both = new Barrier(2);
        ulong va = Parent.Map(2 * Huge, new AreaBackend.OnDemand((p, page) =>
        {
            lock (threadsSeen) threadsSeen.Add(Environment.CurrentManagedThreadId);
            int now = Interlocked.Increment(ref inside);
            InterlockedMax(ref most, now);
            Deadlines.TrySignalAndWait(both); // both fills are inside at once, or this times out
            Interlocked.Decrement(ref inside);
            Stamp(p, page);
            return true;
        }), Anywhere(align: Huge));

        List<TestThread> threads = TestThread.StartAll(2, i => $"faulter {i}", i =>
        {
            Parent.Space.Activate();
            ulong at = va + (ulong)i * Huge;
            Assert.That(ReadValOf<ulong>(Parent.Space, at, 8).Unwrap(), Is.EqualTo(at));
        });
        TestThread.JoinAll(threads);

        Assert.That(most, Is.EqualTo(2));
        Assert.That(threadsSeen.Count, Is.EqualTo(2));
    }

    private static void InterlockedMax(ref int target, int value)
    {
        int seen;
        while ((seen = Volatile.Read(ref target)) < value && Interlocked.CompareExchange(ref target, value, seen) != seen) { }
    }

    [Test]
    public void On_demand_pages_live_beside_lazy_and_image_areas_and_fork_copy_on_write()
    {
        var rec = new Recorder();
        using VmImage image = VmImage.FromBytes(Filled(0x44, (int)(2 * Page)), Pool);
        Parent.FaultAroundPages = 1;
        ulong lazy = MapLazy(Parent, 2);
        ulong img = Parent.Map(2 * Page, new AreaBackend.Image(image, 0), Anywhere());
        ulong od = Parent.Map(4 * Page, new AreaBackend.OnDemand(rec.Fill), Anywhere());
        Write(Parent, lazy, [1]);
        Read(Parent, od, 8);

        AddressSpace child = ForkOf(Parent);
        child.FaultAroundPages = 1;
        Write(child, od, [0xC0]);                       // filled page: copied for the child
        Assert.That(Read(child, od + Page, 8).SequenceEqual(Stamped(od + Page).Take(8)), Is.True); // unfilled: the child's fill
        Write(Parent, od + 2 * Page, [0xD0]);

        Assert.That(Read(Parent, od, 1)[0], Is.EqualTo(Stamped(od)[0]));
        Assert.That(Read(child, od, 1)[0], Is.EqualTo(0xC0));
        Assert.That(Read(Parent, od + 2 * Page, 1)[0], Is.EqualTo(0xD0));
        Assert.That(Read(child, img, 1)[0], Is.EqualTo(0x44));
        Assert.That(Read(child, lazy, 1)[0], Is.EqualTo(1));
        Assert.That(rec.Calls, Is.EqualTo(new[] { od, od + Page, od + 2 * Page }));
        Assert.That(child.Stats.CopyOnWriteCopies, Is.EqualTo(1));
        Assert.That(child.Stats.OnDemandFills, Is.EqualTo(1));
        Assert.That(Parent.Stats.OnDemandFills, Is.EqualTo(2));
        Assert.That(Parent.Areas.Select(a => a.Backend.GetType().Name), Is.EquivalentTo(new[] { "Alloc", "Image", "OnDemand" }));
        AssertHostMirrors(Parent, child);
    }

    [Test]
    public void RegisterPageFaultHandler_on_a_managed_space_fails_loudly_and_changes_nothing()
    {
        var rec = new Recorder();
        ulong va = Parent.Map(Page, new AreaBackend.OnDemand(rec.Fill), Anywhere());
        AddressSpace child = ForkOf(Parent);

        foreach (VmSpace space in new[] { Parent.Space, child.Space })
        {
            var e = Assert.Throws<InvalidOperationException>(() => space.RegisterPageFaultHandler((VmSpace s, in PageFaultInfo i) => false));
            Assert.That(e!.Message, Does.Contain("AreaBackend.OnDemand"));
        }
        Assert.That(Read(Parent, va, 8).SequenceEqual(Stamped(va).Take(8)), Is.True, "the area layer still serves the faults");
        Assert.That(Read(child, va, 8).SequenceEqual(Stamped(va).Take(8)), Is.True);
        Assert.Throws<ArgumentNullException>(() => Parent.Space.RegisterPageFaultHandler(null!));
    }

    [Test]
    public void Fills_racing_Dispose_on_another_thread_end_filled_or_as_faults()
    {
        for (int round = 0; round < 30; round++)
        {
            AddressSpace space = NewAddressSpace();
            ulong va = space.Map(64 * Page, new AreaBackend.OnDemand((p, page) => { Stamp(p, page); return true; }), Anywhere());
            using var started = new ManualResetEventSlim();
            int ok = 0, faulted = 0;
            List<TestThread> readers = TestThread.StartAll(2, i => $"reader {i}", i =>
            {
                started.Set();
                try { space.Space.Activate(); }
                catch (ObjectDisposedException) { return; } // disposed before this reader began
                for (ulong p = (ulong)i; p < 64; p += 2)
                {
                    IoResult<ulong> v;
                    try { v = ReadValOf<ulong>(space.Space, va + p * Page, 8); }
                    catch (ObjectDisposedException) { Interlocked.Increment(ref faulted); break; }
                    if (v.IsOk) { Assert.That(v.Value, Is.EqualTo(va + p * Page)); Interlocked.Increment(ref ok); }
                    else { Assert.That(v.Error, Is.EqualTo(UVmError.PageFault)); Interlocked.Increment(ref faulted); }
                }
                VmSpace.Deactivate();
            });
            Deadlines.Wait(started, "a reader to start");
            space.Dispose();
            TestThread.JoinAll(readers);
            Pool.Trim();
            Assert.That(Pool.FramesInUse, Is.Zero, $"round {round}: ok {ok}, faulted {faulted}");
        }
        Parent.Space.Activate();
    }

    [Test]
    public void A_null_callback_is_a_specific_error_and_extreme_lengths_change_nothing()
    {
        IReadOnlyList<VmArea> areas = Parent.Areas;
        Assert.Throws<ArgumentException>(() => Parent.Map(Page, new AreaBackend.OnDemand(null!), Anywhere()));
        var od = new AreaBackend.OnDemand((p, page) => true);
        Assert.That(Assert.Throws<UVmException>(() => Parent.Map(0, od, Anywhere()))!.Error, Is.EqualTo(UVmError.InvalidArgs));
        foreach (ulong length in new[] { 1UL, Page - 1, Page + 1, ulong.MaxValue })
            Assert.Throws<ArgumentException>(() => Parent.Map(length, od, Anywhere()), $"length {length}");
        foreach (ulong length in new[] { 1UL << 47, 1UL << 52, 1UL << 63, ulong.MaxValue - Page + 1 })
            Assert.That(Assert.Throws<UVmException>(() => Parent.Map(length, od, Anywhere()))!.Error, Is.EqualTo(UVmError.NoMemory), $"length 0x{length:x}");
        foreach (ulong addr in new[] { GiB, 1UL << 47, 1UL << 52, 1UL << 63, ulong.MaxValue - Page + 1 })
            Assert.That(Assert.Throws<UVmException>(() => Parent.Map(Page, od, At(addr)))!.Error, Is.EqualTo(UVmError.InvalidArgs), $"address 0x{addr:x}");
        Assert.That(Parent.Areas, Is.EqualTo(areas));
        Assert.That(Pool.FramesInUse, Is.Zero);
    }
}
