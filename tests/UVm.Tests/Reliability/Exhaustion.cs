using NUnit.Framework;
using UVm.Areas;
using UVm.Frames;
using UVm.Io;
using UVm.Spaces;
using static UVm.Tests.Reliability.Harness;

namespace UVm.Tests.Reliability;

/// <summary>
/// Running out: of frames (<see cref="UVmError.NoMemory"/>), of the space's host-mapping budget
/// (<see cref="UVmError.HostMappingLimit"/>), of host address space for an arena
/// (<see cref="UVmError.HostNoMemory"/>). Each refusal must be a clear error that leaves the page
/// table, the host and the frame counts exactly as they were, and nothing may leak.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class Exhaustion
{
    private const ulong Va = 4 * MiB;

    private FramePool _pool = null!;
    private readonly List<IDisposable> _later = new();

    /// <summary>Two chunks: an address space may reserve one for its region and the test can still exhaust the other.</summary>
    [SetUp]
    public void CreatePool() => _pool = new FramePool(4 * MiB);

    [TearDown]
    public void CheckNothingLeaked()
    {
        VmSpace.Deactivate();
        for (int i = _later.Count - 1; i >= 0; i--) _later[i].Dispose();
        _later.Clear();
        long inUse = _pool.FramesInUse;
        if (inUse == 0) _pool.Dispose();
        Assert.That(inUse, Is.Zero, "frames leaked");
    }

    private T Later<T>(T d) where T : IDisposable
    {
        _later.Add(d);
        return d;
    }

    /// <summary>Takes every free frame of the pool; the handles are released after the test.</summary>
    private List<UFrame> Exhaust(FramePool pool)
    {
        var taken = new List<UFrame>();
        while ((ulong)taken.Count <= pool.TotalFrames)
        {
            try
            {
                taken.Add(Later(pool.AllocFrame()));
            }
            catch (UVmException e) when (e.Error == UVmError.NoMemory)
            {
                Figures.Add("exhaustion: frames taken to exhaust pools", taken.Count);
                return taken;
            }
        }
        Assert.Fail($"the pool handed out {taken.Count} frames, more than its {pool.TotalFrames}, and never refused");
        return taken;
    }

    private static void Release(List<UFrame> frames, int count)
    {
        for (int i = 0; i < count && frames.Count > 0; i++)
        {
            frames[^1].Dispose();
            frames.RemoveAt(frames.Count - 1);
        }
    }

    // ---- frames ------------------------------------------------------------------------------------

    [Test, CancelAfter(60_000)]
    public void An_exhausted_pool_refuses_with_NoMemory_and_changes_nothing()
    {
        VmSpace space = Later(new VmSpace(new VmSpaceOptions { Size = 64 * MiB, Pool = _pool }));
        for (int i = 0; i < 8; i++) MapFilled(space, Va + (ulong)i * Page, (byte)(i + 1));
        Exhaust(_pool);
        var before = SpaceState.Of(space);

        var e = Assert.Throws<UVmException>(() => _pool.AllocFrame())!;
        Assert.That(e.Error, Is.EqualTo(UVmError.NoMemory));
        Assert.That(e.Message, Does.Contain("frame pool"));
        Assert.That(Assert.Throws<UVmException>(() => _pool.AllocSegment(1))!.Error, Is.EqualTo(UVmError.NoMemory));
        Assert.That(Assert.Throws<UVmException>(() => _pool.AllocSegment(64))!.Error, Is.EqualTo(UVmError.NoMemory));
        before.AssertSame(space, "after refused allocations");

        // Forking needs no frame: it still works, and the child shares everything.
        using (VmSpace child = space.ForkCopyOnWrite())
        {
            Assert.That(MappedSlots(child).Select(s => s.Paddr), Is.EqualTo(before.Slots.Select(s => s.Paddr)));
        }
        Figures.Add("exhaustion: refusals checked", 4);
    }

    [Test, CancelAfter(60_000)]
    public void A_populated_map_on_an_exhausted_pool_fails_with_NoMemory_and_maps_nothing()
    {
        var areas = Later(new AddressSpace(new VmSpaceOptions { Size = 64 * MiB, Pool = _pool }));
        areas.Map(4 * Page, new AreaBackend.Alloc(true), new VmMapOptions { Addr = Va, Flags = PageFlags.RW });
        List<UFrame> held = Exhaust(_pool);
        Release(held, 5); // room for 5 of the 16 pages: the map gets part-way, then must undo it
        var before = SpaceState.Of(areas.Space);
        int areasBefore = areas.Areas.Count;

        var e = Assert.Throws<UVmException>(() =>
            areas.Map(16 * Page, new AreaBackend.Alloc(true), new VmMapOptions { Addr = 8 * MiB, Flags = PageFlags.RW }))!;
        Assert.That(e.Error, Is.EqualTo(UVmError.NoMemory));
        before.AssertSame(areas.Space, "after a refused populated map");
        Assert.That(areas.Areas, Has.Count.EqualTo(areasBefore), "a refused map left an area behind");
        Figures.Add("exhaustion: refusals checked", 1);
    }

    [Test, CancelAfter(60_000)]
    public void A_demand_zero_fault_on_an_exhausted_pool_fails_the_copy_with_PageFault_and_leaks_nothing()
    {
        var areas = Later(new AddressSpace(new VmSpaceOptions { Size = 64 * MiB, Pool = _pool }));
        ulong va = areas.Map(16 * Page, new AreaBackend.Alloc(false), new VmMapOptions { Flags = PageFlags.RW });
        areas.Space.Activate();
        List<UFrame> held = Exhaust(_pool);
        Assert.That(held, Is.Not.Empty, "the test needs frames of its own to give back");
        var before = SpaceState.Of(areas.Space);

        var buf = new byte[64];
        CopyResult r = default;
        Assert.DoesNotThrow(() => r = Read(areas.Space, va, buf), "a fallible copy must report an unresolvable fault, not throw");
        Assert.That(r.Error, Is.EqualTo(UVmError.PageFault));
        Assert.That(r.Bytes, Is.Zero);
        CopyResult w = default;
        Assert.DoesNotThrow(() => w = Write(areas.Space, va, buf));
        Assert.That(w.Error, Is.EqualTo(UVmError.PageFault));
        before.AssertSame(areas.Space, "after refused demand-zero faults");

        Release(held, 32);
        Assert.That(Read(areas.Space, va, buf).IsOk, Is.True, "once frames are free the same access succeeds");
    }

    [Test, CancelAfter(60_000)]
    public void A_copy_on_write_fault_on_an_exhausted_pool_fails_the_copy_and_both_spaces_keep_their_data()
    {
        var parent = Later(new AddressSpace(new VmSpaceOptions { Size = 64 * MiB, Pool = _pool }));
        ulong va = parent.Map(4 * Page, new AreaBackend.Alloc(true), new VmMapOptions { Flags = PageFlags.RW });
        parent.Space.Activate();
        Assert.That(Write(parent.Space, va, new byte[] { 7, 7, 7 }).IsOk);
        AddressSpace child = Later(parent.Fork());
        List<UFrame> held = Exhaust(_pool);
        Assert.That(held, Is.Not.Empty, "the test needs frames of its own to give back");
        var parentBefore = SpaceState.Of(parent.Space);

        child.Space.Activate();
        CopyResult w = default;
        Assert.DoesNotThrow(() => w = Write(child.Space, va, new byte[] { 9 }));
        Assert.That(w.Error, Is.EqualTo(UVmError.PageFault));
        parentBefore.AssertSame(parent.Space, "the parent after its child's refused copy-on-write");
        var one = new byte[1];
        Assert.That(Read(child.Space, va, one).IsOk && one[0] == 7, "the child still reads the shared data");

        Release(held, 8);
        Assert.That(Write(child.Space, va, new byte[] { 9 }).IsOk, "once frames are free the write succeeds");
        parent.Space.Activate();
        Assert.That(Read(parent.Space, va, one).IsOk && one[0] == 7, "the parent never sees its child's write");
    }

    [Test, CancelAfter(60_000)]
    public void Frame_reservations_never_starve_allocation_while_frames_are_free()
    {
        using var pool = new FramePool(8 * MiB);
        using (var areas = new AddressSpace(new VmSpaceOptions { Size = 64 * MiB, Pool = pool }))
        {
            areas.FaultAroundPages = 1;
            ulong va = areas.Map(8 * Huge, new AreaBackend.Alloc(false), new VmMapOptions { Align = Huge, Flags = PageFlags.RW });
            areas.Space.Activate();
            var one = new byte[1];
            for (int region = 0; region < 4; region++)
                Assert.That(Read(areas.Space, va + (ulong)region * Huge, one).IsOk, $"region {region}");
            Assert.That(pool.FramesInUse, Is.LessThan(pool.TotalFrames / 2), "most of the pool is free");
            Assert.DoesNotThrow(() => pool.AllocFrame().Dispose(), "a free frame exists, but AllocFrame refuses it");
            CopyResult r = default;
            Assert.DoesNotThrow(() => r = Read(areas.Space, va + 5 * Huge, one));
            Assert.That(r.IsOk, Is.True, "a demand-zero fault in a fifth region finds no frame although the pool is mostly free");
            VmSpace.Deactivate();
        }
        Assert.That(pool.FramesInUse, Is.Zero);
    }

    // ---- host-mapping budget -----------------------------------------------------------------------

    /// <summary>Maps single pages with alternating rights (each its own host mapping) until the budget refuses; returns pages mapped.</summary>
    private static int FillBudget(VmSpace space, out UVmException refusal, out SpaceState before)
    {
        int room = (int)((space.Size - Va) / Page);
        for (int i = 0; i < room; i++)
        {
            before = SpaceState.Of(space);
            try
            {
                MapFilled(space, Va + (ulong)i * Page, (byte)(i + 1), i % 2 == 0 ? PageFlags.RW : PageFlags.R);
            }
            catch (UVmException e)
            {
                refusal = e;
                return i;
            }
        }
        Assert.Fail($"{room} pages, each its own host mapping, were mapped and the budget never refused");
        throw new InvalidOperationException("unreachable");
    }

    [Test, CancelAfter(60_000)]
    public void A_copy_on_write_fault_refused_by_the_budget_fails_the_write_and_leaks_nothing()
    {
        var parent = Later(new AddressSpace(new VmSpaceOptions { Size = 64 * MiB, Pool = _pool, MaxHostMappings = 24 }));
        ulong va = parent.Map(16 * Page, new AreaBackend.Alloc(true), new VmMapOptions { Addr = 32 * MiB, Flags = PageFlags.RW });
        parent.Space.Activate();
        Assert.That(Write(parent.Space, va, Enumerable.Repeat((byte)7, (int)(16 * Page)).ToArray()).IsOk);
        AddressSpace child = Later(parent.Fork());
        // Spend the child's budget with pages of its own outside the area; then its copy-on-write
        // copy (a new host mapping) cannot be mapped.
        int spent = FillBudget(child.Space, out UVmException refusal, out _);
        Assert.That(refusal.Error, Is.EqualTo(UVmError.HostMappingLimit));
        var before = SpaceState.Of(child.Space);
        long frames = _pool.FramesInUse;

        child.Space.Activate();
        CopyResult w = default;
        Assert.DoesNotThrow(() => w = Write(child.Space, va + 3 * Page, new byte[] { 9 }));

        Assert.That(w.Error, Is.EqualTo(UVmError.PageFault), "the refused copy fails the write, it does not throw");
        Assert.That(w.Bytes, Is.Zero);
        before.AssertSame(child.Space, "the child after its refused copy-on-write");
        Assert.That(_pool.FramesInUse, Is.EqualTo(frames), "the copies' frames went back");
        CheckReferenceCounts(_pool, new[] { parent.Space, child.Space });
        var one = new byte[1];
        Assert.That(Read(child.Space, va + 3 * Page, one).IsOk && one[0] == 7, "the child still reads the shared data");
        parent.Space.Activate();
        Assert.That(Read(parent.Space, va + 3 * Page, one).IsOk && one[0] == 7, "the parent is untouched");

        // The budget, and nothing else, refused it: with the child's own pages gone the same write succeeds.
        Unmap(child.Space, Va, (ulong)spent * Page);
        child.Space.Activate();
        Assert.That(Write(child.Space, va + 3 * Page, new byte[] { 9 }).IsOk, Is.True, "once the budget has room the same write succeeds");
        parent.Space.Activate();
        Assert.That(Read(parent.Space, va + 3 * Page, one).IsOk && one[0] == 7, "the parent never sees its child's write");
        VmSpace.Deactivate();
        Figures.Add("exhaustion: refusals checked", 1);
    }

    [Test, CancelAfter(60_000)]
    public void Passing_the_host_mapping_budget_fails_with_HostMappingLimit_before_anything_changes()
    {
        const int budget = 16;
        VmSpace space = Later(new VmSpace(new VmSpaceOptions { Size = 64 * MiB, Pool = _pool, MaxHostMappings = budget }));
        Assert.That(space.MaxHostMappings, Is.EqualTo(budget));
        int mapped = FillBudget(space, out UVmException refusal, out SpaceState before);

        Assert.That(refusal.Error, Is.EqualTo(UVmError.HostMappingLimit));
        Assert.That(refusal.Message, Does.Contain("budget"));
        Assert.That(mapped, Is.GreaterThan(budget / 2), "the budget refused long before it was used");
        before.AssertSame(space, "after the refused map");
        Assert.That(space.CountHostMappings(), Is.LessThanOrEqualTo(budget));

        // Any change that could add host mappings is refused now too, and changes nothing.
        var e = Assert.Throws<UVmException>(() =>
        {
            using CursorMut c = space.CursorMut(VaddrRange.FromLength(Va, Page));
            c.ProtectNext(Page, (ref PageFlags f, ref CachePolicy _) => f = PageFlags.R | (f & ~PageFlags.RWX) | PageFlags.X);
        })!;
        Assert.That(e.Error, Is.EqualTo(UVmError.HostMappingLimit));
        before.AssertSame(space, "after the refused protect");

        // Mapping in one contiguous run (one host mapping) is still fine once room is made.
        Unmap(space, Va, (ulong)mapped * Page);
        using (USegment seg = _pool.AllocSegment(64))
        using (CursorMut c = space.CursorMut(VaddrRange.FromLength(Va, 64 * Page)))
            c.Map(seg, PageProperty.New(PageFlags.RW));
        Assert.That(MirrorDiffs(space), Is.Empty);
        Assert.That(space.CountHostMappings(), Is.LessThanOrEqualTo(3));
        Figures.Add("exhaustion: refusals checked", 2);
    }

    [Test, CancelAfter(60_000)]
    public void A_populated_area_past_the_budget_fails_with_HostMappingLimit_and_maps_nothing()
    {
        var areas = Later(new AddressSpace(new VmSpaceOptions { Size = 64 * MiB, Pool = _pool, MaxHostMappings = 12 }));
        // Areas with alternating rights, each its own host mapping, until the budget refuses one.
        UVmException? refusal = null;
        SpaceState? before = null;
        int mapped = 0;
        for (int i = 0; i < 64 && refusal == null; i++)
        {
            before = SpaceState.Of(areas.Space);
            try
            {
                areas.Map(Page, new AreaBackend.Alloc(true), new VmMapOptions { Addr = Va + (ulong)i * 2 * Page, Flags = i % 2 == 0 ? PageFlags.RW : PageFlags.R });
                mapped++;
            }
            catch (UVmException e)
            {
                refusal = e;
            }
        }
        Assert.That(refusal, Is.Not.Null, "the budget never refused");
        Assert.That(mapped, Is.GreaterThan(0), "the budget refused the very first area: the test proved nothing");
        Assert.That(refusal!.Error, Is.EqualTo(UVmError.HostMappingLimit));
        before!.AssertSame(areas.Space, "after the refused area");
        Figures.Add("exhaustion: refusals checked", 1);
    }

    [Test, CancelAfter(60_000)]
    public void A_fork_refused_by_the_budget_leaves_the_parent_unchanged()
    {
        VmSpace parent = new(new VmSpaceOptions { Size = 64 * MiB, Pool = _pool, MaxHostMappings = 16 });
        // Ten adjacent pages whose frames are not contiguous: ten host mappings in the child.
        var frames = Enumerable.Range(0, 10).Select(_ => _pool.AllocFrame()).ToList();
        for (int i = 0; i < 10; i++)
        {
            using CursorMut c = parent.CursorMut(VaddrRange.FromLength(Va + (ulong)i * Page, Page));
            c.Map(frames[9 - i], PageProperty.New(PageFlags.RW));
        }
        frames.ForEach(f => f.Dispose());
        var before = SpaceState.Of(parent);

        var e = Assert.Throws<UVmException>(() => parent.ForkCopyOnWrite().Dispose())!;
        Assert.That(e.Error, Is.EqualTo(UVmError.HostMappingLimit));
        before.AssertSame(parent, "after the refused fork (frames, rights and host)");
        CheckReferenceCounts(_pool, new[] { parent });
        Assert.DoesNotThrow(parent.Dispose);
    }

    [Test, CancelAfter(60_000)]
    public void A_demand_zero_fault_refused_by_the_budget_fails_the_copy_and_leaks_nothing()
    {
        using var pool = new FramePool(8 * MiB);
        long inUse;
        using (var areas = new AddressSpace(new VmSpaceOptions { Size = 64 * MiB, Pool = pool, MaxHostMappings = 8 }))
        {
            areas.FaultAroundPages = 1;
            ulong va = areas.Map(64 * Page, new AreaBackend.Alloc(false), new VmMapOptions { Flags = PageFlags.RW });
            areas.Space.Activate();
            var one = new byte[1];
            int refused = 0;
            for (int i = 0; i < 64; i += 2) // every other page: each a host mapping of its own
            {
                CopyResult r = default;
                Assert.DoesNotThrow(() => r = Read(areas.Space, va + (ulong)i * Page, one), $"page {i}");
                if (!r.IsOk)
                {
                    Assert.That(r.Error, Is.EqualTo(UVmError.PageFault));
                    refused++;
                }
            }
            Assert.That(refused, Is.GreaterThan(0), "the budget never refused");
            Assert.That(refused, Is.LessThan(32), "the budget refused every fault: none was resolved before it ran out");
            Assert.That(MirrorDiffs(areas.Space), Is.Empty);
            CheckReferenceCounts(pool, new[] { areas.Space });
            VmSpace.Deactivate();
        }
        inUse = pool.FramesInUse;
        Assert.That(inUse, Is.Zero, "frames leaked");
    }

    [Test, CancelAfter(60_000)]
    public void Unmapping_never_takes_the_arena_past_its_budget()
    {
        const int budget = 8;
        VmSpace space = Later(new VmSpace(new VmSpaceOptions { Size = 64 * MiB, Pool = _pool, MaxHostMappings = budget }));
        using (USegment seg = _pool.AllocSegment(32))
        using (CursorMut c = space.CursorMut(VaddrRange.FromLength(Va, 32 * Page)))
            c.Map(seg, PageProperty.New(PageFlags.RW));
        int holes = 0, most = space.CountHostMappings();
        bool refused = false;
        for (int i = 1; i < 32; i += 2)
        {
            try
            {
                Unmap(space, Va + (ulong)i * Page, Page);
            }
            catch (UVmException e) when (e.Error == UVmError.HostMappingLimit)
            {
                refused = true;
                break; // refusing is fine; passing the budget is not
            }
            holes++;
            most = Math.Max(most, space.CountHostMappings());
            Assert.That(space.CountHostMappings(), Is.LessThanOrEqualTo(budget), $"after unmapping page {i}");
        }
        Assert.That(MirrorDiffs(space), Is.Empty);
        // Preconditions, by counts: holes were punched, and they took the arena up to its budget.
        Assert.That(holes, Is.GreaterThan(0), "the budget refused the very first hole: the test proved nothing");
        Assert.That(refused || most >= budget - 2, Is.True, $"the holes took the arena to only {most} of its {budget} host mappings, and nothing was refused");
    }

    [Test, CancelAfter(60_000)]
    public void The_spaces_of_the_process_share_one_host_mapping_budget()
    {
        // vm.max_map_count is per process: two spaces, each with room of its own to spare, must
        // together stay within the process's budget, and the refusal must change nothing.
        int saved = Host.HostMappingBudget.ProcessLimit;
        VmSpace a = Later(new VmSpace(new VmSpaceOptions { Size = 64 * MiB, Pool = _pool, MaxHostMappings = 1000 }));
        VmSpace b = Later(new VmSpace(new VmSpaceOptions { Size = 64 * MiB, Pool = _pool, MaxHostMappings = 1000 }));
        int others = a.Budget.CountExactly() + b.Budget.CountExactly();
        Host.HostMappingBudget.ProcessLimit = (int)Host.HostMappingBudget.ProcessBound + 40;
        try
        {
            int mappedA = FillBudget(a, out UVmException ea, out SpaceState _);
            Assert.That(ea.Error, Is.EqualTo(UVmError.HostMappingLimit));
            Assert.That(ea.Message, Does.Contain("process"), "the process's budget refused, not the space's");
            var beforeB = SpaceState.Of(b);
            var eb = Assert.Throws<UVmException>(() => MapFilled(b, Va + Page, 1, PageFlags.R))!;
            Assert.That(eb.Error, Is.EqualTo(UVmError.HostMappingLimit), "the second space finds the shared budget spent");
            beforeB.AssertSame(b, "after the refused map in the second space");
            Assert.That(a.CountHostMappings() + b.CountHostMappings(), Is.LessThanOrEqualTo(40 + others), "the arenas passed the process's budget");

            // Room made in one space is room for the other.
            Unmap(a, Va, (ulong)mappedA * Page);
            Assert.DoesNotThrow(() => MapFilled(b, Va + Page, 1, PageFlags.R));
            Assert.That(MirrorDiffs(a), Is.Empty);
            Assert.That(MirrorDiffs(b), Is.Empty);
            Figures.Add("exhaustion: refusals checked", 2);
        }
        finally
        {
            Host.HostMappingBudget.ProcessLimit = saved;
        }
    }

    // ---- host address space -----------------------------------------------------------------------------

    [Test, CancelAfter(60_000)]
    public void An_arena_the_host_cannot_reserve_fails_with_HostNoMemory()
    {
        // 128 TiB (+ guard) is the whole user half of a 47-bit address space: never available.
        var e = Assert.Throws<UVmException>(() => new VmSpace(new VmSpaceOptions { Size = Paging.MaxUserSpace, Pool = _pool }))!;
        Assert.That(e.Error, Is.EqualTo(UVmError.HostNoMemory));
        Assert.That(e.Message, Does.Contain("arena"));
        Assert.That(Assert.Throws<UVmException>(() => new AddressSpace(new VmSpaceOptions { Size = Paging.MaxUserSpace, Pool = _pool }))!.Error,
            Is.EqualTo(UVmError.HostNoMemory));

        // Two halves: the second cannot fit beside the first (and the process's own mappings).
        var spaces = new List<VmSpace>();
        UVmException? refused = null;
        try
        {
            for (int i = 0; i < 2 && refused == null; i++)
            {
                try
                {
                    spaces.Add(new VmSpace(new VmSpaceOptions { Size = 64UL << 40, Pool = _pool }));
                }
                catch (UVmException x)
                {
                    refused = x;
                }
            }
        }
        finally
        {
            spaces.ForEach(s => s.Dispose());
        }
        Assert.That(refused, Is.Not.Null, "two 64 TiB arenas were both reserved");
        Assert.That(refused!.Error, Is.EqualTo(UVmError.HostNoMemory));

        // Nothing is left behind: an ordinary space still works.
        using var ok = new VmSpace(new VmSpaceOptions { Size = 4 * MiB, Pool = _pool });
        MapFilled(ok, 0, 1);
        Assert.That(MirrorDiffs(ok), Is.Empty);
        Figures.Add("exhaustion: refusals checked", 3);
    }
}
