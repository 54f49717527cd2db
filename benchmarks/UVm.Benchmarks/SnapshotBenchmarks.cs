using System.Diagnostics;
using UVm.Areas;
using UVm.Frames;
using UVm.Interop;
using UVm.Io;
using UVm.Spaces;

using static UVm.Benchmarks.Scenario;

namespace UVm.Benchmarks;

/// <summary>
/// Snapshots (<see cref="AddressSpace.Snapshot"/>, <see cref="VmSnapshot.Instantiate"/>,
/// <see cref="AddressSpace.Reset"/>) and the write watch (<see cref="AddressSpace.ResetWriteWatch"/>,
/// <see cref="AddressSpace.WrittenPages"/>) against the two ways a process resets memory by
/// hand (<c>benchmarks/peers/fork_server.c</c>, AFL's model; <c>image_reset.c</c>, Wasmtime's):
/// <list type="bullet">
/// <item><b>reset</b>: a space with 1 GiB resident (64 MiB quick) is snapshotted; a run writes
/// 8 bytes into each of N = 1,000 pages through the guest access path, then resets to the snapshot.
/// Pages are drawn exactly as the peers draw them (<see cref="PageDraw"/>, the same generator and seed).</item>
/// <item><b>instantiate</b> from that snapshot, and <b>fork</b> of such a space, vs Linux <c>fork()</c>.</item>
/// <item><b>write watch</b>: the first write to a watched page vs a raw C SIGSEGV resolver, and the cost of <c>WrittenPages</c>.</item>
/// <item><b>memory</b>: page-table bytes of a snapshot and ten instances.</item>
/// </list>
/// Every measurement has its own <see cref="FramePool"/>, checked empty at the end; contents
/// are checked outside the timed regions.
/// </summary>
internal static class SnapshotBenchmarks
{
    private const ulong Page = Paging.PageSize;
    private const ulong MiB = 1UL << 20;
    private const ulong AreaBase = 2 * MiB;     // the area starts at guest 2 MiB, 2 MiB aligned
    private const ulong PoolSize = 8UL << 30;   // sparse: only what a scenario touches is resident
    private const byte Fill = StampFill;        // what the image holds after each page's index, as the peers'
    private const ulong ChunkPages = FramePool.ChunkFrames;

    /// <summary>Pages a run writes (the peers' N).</summary>
    internal const int Writes = 1000;

    /// <summary>The resident size of the full run (the quick run's: 64 MiB, as the peers').</summary>
    private static ulong Resident(Settings s) => s.Quick ? 64 * MiB : 1UL << 30;

    /// <summary>The small space the cost of a reset is set against: 16 MiB, its area 14 MiB.</summary>
    private const ulong SmallSpace = 16 * MiB;

    internal static IEnumerable<Row> Run(Settings s, PeerResults peers)
    {
        foreach (Row r in GuardMany("reset to a snapshot", () => ResetRows(s, peers))) yield return r;
        foreach (Row r in GuardMany("fork of a space with memory resident (snapshot suite)", () => ForkRows(s, peers))) yield return r;
        yield return Guard("first tracked write after ResetWriteWatch", () => WatchFaultRow(s, peers));
    }

    // ---- 1. reset, instantiate, write watch listing, memory: one 1 GiB space and its snapshot ----

    private static IEnumerable<Row> ResetRows(Settings s, PeerResults peers)
    {
        ulong bytes = Resident(s);
        string size = Size(bytes);
        Big big = MeasureBig(bytes, s.Warmups, s.Reps, Writes, instances: 10);
        ResetCost small = MeasureResets(SmallSpace, SmallSpace - AreaBase, s.Warmups, s.Reps, Writes, [new(Pattern.Random, 1)]).Single();
        ResetCost r1 = big.Resets.Single(r => r.Config is { Pattern: Pattern.Random, FaultAround: 1 });
        ResetCost r16 = big.Resets.Single(r => r.Config is { Pattern: Pattern.Random, FaultAround: 16 });
        ResetCost c16 = big.Resets.Single(r => r.Config is { Pattern: Pattern.Clustered, FaultAround: 16 });
        ResetCost c1 = big.Resets.Single(r => r.Config is { Pattern: Pattern.Clustered, FaultAround: 1 });

        PeerFigure? madR = peers.Get("image_reset_madvise_random", "us_per_reset");
        PeerFigure? madC = peers.Get("image_reset_madvise_clustered", "us_per_reset");
        PeerFigure? imgR = peers.Get("image_reset_run_random", "us_per_run");
        PeerFigure? imgC = peers.Get("image_reset_run_clustered", "us_per_run");
        PeerFigure? fsR = peers.Get("fork_server_random", "us_per_run");
        PeerFigure? fsC = peers.Get("fork_server_clustered", "us_per_run");
        PeerFigure? fork = peers.Get("fork_kernel", "us_per_fork");
        string setup = Program.Inv($"a space of {Size(2 * bytes)} with an Alloc(populate) RW area of {size} at 2 MiB, every page written once (its index in the first 8 bytes, 0x{Fill:X2} after), then Snapshot() (host copies {(HostCopiesOn ? "on: the snapshot's pages are mapped MAP_PRIVATE with W, the kernel copies a page on its first write and the reset finds the copies with PAGEMAP_SCAN and drops them with process_madvise" : "off (not supported here): every copy is UVm's, through a fault")}); after each run's untimed check the check's reads are dropped from the host page tables, as the peer drops its own; ");
        string draw = Program.Inv($"pages drawn like the peers' (splitmix64, seed {PageDraw.Seed}, a new set each repetition: random = {Writes} distinct pages, uniform, in the order drawn; clustered = {Writes} consecutive pages at a random start); ");
        string Missing(string scenario, PeerFigure? p) => p is null ? peers.Missing(scenario) + "; " : "";
        // The host's own cost of UVm's way (remap_floor.c: the same host calls by hand, no signal, no managed code).
        string Floor(string pattern, bool withCopy)
        {
            PeerFigure? copy = peers.Get($"remap_floor_copy_{pattern}", "ns_per_page");
            PeerFigure? restore = peers.Get($"remap_floor_restore_{pattern}", "ns_per_page");
            if (copy is null || restore is null) return "; " + peers.Missing($"remap_floor_restore_{pattern}");
            string restoreText = Program.Inv($"restoring {Writes} {pattern} pages by mmap of the image page back (one call per run of pages, {restore.Number("calls")} calls) takes {Report.Fmt(restore.Median * Writes / 1e3)} us");
            return withCopy
                ? Program.Inv($"; host floor in this run (remap_floor, no UVm): copying {Writes} {pattern} pages (pwrite into a fresh memfd page + mmap(MAP_FIXED|MAP_POPULATE) of it over the page + the write) takes {Report.Fmt(copy.Median * Writes / 1e3)} us, ") + restoreText +
                  Program.Inv($", together {Report.Fmt((copy.Median + restore.Median) * Writes / 1e3)} us")
                : "; host floor in this run (remap_floor, no UVm): " + restoreText;
        }

        // reset alone
        yield return new Row($"reset alone, {size} space, {Writes} random pages, fault-around 1", "us/reset", Better.Lower,
            "image reset's madvise(DONTNEED) (image_reset_madvise_random)", madR?.Median, r1.Reset.Median, Target.RatioAtMost(1.0), r1.Reset.Count, madR?.Reps,
            Missing("image_reset_madvise_random", madR) + setup + draw + Describe(r1) + Program.Inv($"Reset() alone timed; {r1.Reset.Spread} us") + Floor("random", withCopy: false));
        yield return new Row($"reset alone, {size} space, {Writes} random pages, fault-around 16 (default)", "us/reset", Better.Lower,
            "image reset's madvise(DONTNEED) (image_reset_madvise_random)", madR?.Median, r16.Reset.Median, Target.Report, r16.Reset.Count, madR?.Reps,
            Missing("image_reset_madvise_random", madR) + "as the row above with the default fault-around: each copy-on-write fault copies its window, so the reset has more to put back; " + Describe(r16) + Program.Inv($"{r16.Reset.Spread} us"));
        yield return new Row($"reset alone, {size} space, {Writes} clustered pages, fault-around 16 (default)", "us/reset", Better.Lower,
            "image reset's madvise(DONTNEED) (image_reset_madvise_clustered)", madC?.Median, c16.Reset.Median, Target.Report, c16.Reset.Count, madC?.Reps,
            Missing("image_reset_madvise_clustered", madC) + Describe(c16) + Program.Inv($"{c16.Reset.Spread} us") + Floor("clustered", withCopy: false));
        yield return new Row($"reset alone, {size} vs {Size(SmallSpace)} space, {Writes} random pages, fault-around 1", "us/reset", Better.Lower,
            $"UVm itself, {Size(SmallSpace)} space", small.Reset.Median, r1.Reset.Median, Target.RatioAtMost(1.5), r1.Reset.Count, small.Reset.Count,
            Program.Inv($"the cost must follow the pages written, not the size of the space: the peer figure is the same scenario in a space of {Size(SmallSpace)} (an area of {Size(SmallSpace - AreaBase)}, {Writes} random pages of its {(SmallSpace - AreaBase) / Page}); ") +
            Program.Inv($"{Size(SmallSpace)}: {Describe(small)}{small.Reset.Spread} us; per host call of the reset: {Report.Fmt(r1.Reset.Median / Math.Max(1, r1.ResetSyscalls))} us ({Size(bytes)}) vs {Report.Fmt(small.Reset.Median / Math.Max(1, small.ResetSyscalls))} us ({Size(SmallSpace)}): random pages of a small area are more often neighbours, so its reset needs fewer calls"));

        // one run
        string run = Program.Inv($"one run = {Writes} fallible 8-byte writes (Space.Writer(va, 8).WriteVal<ulong>, one per page) + Reset(); both timed; ");
        yield return new Row($"one run: write {Writes} random pages + reset, fault-around 1", "us/run", Better.Lower,
            "fork server: fork, child writes, exit, reap (fork_server_random)", fsR?.Median, r1.Run.Median, Target.RatioAtMost(0.6), r1.Run.Count, fsR?.Reps,
            Missing("fork_server_random", fsR) + run + RunParts(r1) + (fsR is null ? "" : Program.Inv($"; the peer's parent has {fsR.Number("resident_mib")} MiB resident, its fork() call alone {Report.Fmt(fsR.Number("fork_call_us"))} us")));
        yield return new Row($"one run: write {Writes} random pages + reset, fault-around 1", "us/run", Better.Lower,
            "image reset: writes + madvise (image_reset_run_random)", imgR?.Median, r1.Run.Median, Target.RatioAtMost(1.2), r1.Run.Count, imgR?.Reps,
            Missing("image_reset_run_random", imgR) + run + RunParts(r1) + (imgR is null ? "" : Program.Inv($"; the peer's writes alone {Report.Fmt(imgR.Number("writes_us"))} us (kernel copy-on-write faults), its madvise {Report.Fmt(madR?.Median)} us")) + Floor("random", withCopy: true));
        yield return new Row($"one run: write {Writes} random pages + reset, fault-around 16 (default)", "us/run", Better.Lower,
            "image reset: writes + madvise (image_reset_run_random)", imgR?.Median, r16.Run.Median, Target.Report, r16.Run.Count, imgR?.Reps,
            Missing("image_reset_run_random", imgR) + run + RunParts(r16) + (fsR is null ? "" : Program.Inv($"; vs the fork server (fork_server_random, {Report.Fmt(fsR.Median)} us): {FmtRatio(r16.Run.Median / fsR.Median)}")));
        yield return new Row($"one run: write {Writes} clustered pages + reset, fault-around 16 (default)", "us/run", Better.Lower,
            "image reset: writes + madvise (image_reset_run_clustered)", imgC?.Median, c16.Run.Median, Target.RatioAtMost(0.8), c16.Run.Count, imgC?.Reps,
            Missing("image_reset_run_clustered", imgC) + run + RunParts(c16) + (imgC is null ? "" : Program.Inv($"; the peer's writes alone {Report.Fmt(imgC.Number("writes_us"))} us, its madvise {Report.Fmt(madC?.Median)} us")) +
            (fsC is null ? "" : Program.Inv($"; vs the fork server (fork_server_clustered, {Report.Fmt(fsC.Median)} us): {FmtRatio(c16.Run.Median / fsC.Median)}")) + Floor("clustered", withCopy: true));
        yield return new Row($"one run: write {Writes} clustered pages + reset, fault-around 1", "us/run", Better.Lower,
            "image reset: writes + madvise (image_reset_run_clustered)", imgC?.Median, c1.Run.Median, Target.Report, c1.Run.Count, imgC?.Reps,
            Missing("image_reset_run_clustered", imgC) + run + RunParts(c1));

        // instantiate
        string forkSays = fork is null ? peers.Missing("fork_kernel") + "; "
            : Program.Inv($"the peer's figure is fork() -> child _exit(0) -> waitpid with {fork.Number("resident_mib")} MiB resident; its parent-side fork() call alone {Report.Fmt(fork.Number("fork_call_us"))} us (Instantiate() is {FmtRatio(big.Instantiate.Median / fork.Number("fork_call_us"))} of that); ");
        yield return new Row($"instantiate from a {size} snapshot", "us/instance", Better.Lower, "Linux fork (fork_kernel)",
            fork?.Median, big.Instantiate.Median, Target.RatioAtMost(0.1), big.Instantiate.Count, fork?.Reps,
            forkSays + setup + Program.Inv($"Instantiate() alone timed (a new arena, the frozen table copied, one reference per frame, the host mappings of its runs: {big.InstanceSyscalls} host syscalls, {big.InstanceMappings} host mappings); each instance checked (no frame allocated; in the warm-ups every page's index read through its own reader) and disposed outside the timing; Dispose() {Report.Fmt(big.InstanceDispose.Median)} us; {big.Instantiate.Spread} us"));
        yield return new Row($"instantiate + dispose, {size} snapshot", "us/instance", Better.Lower, "Linux fork + _exit + reap (fork_kernel)",
            fork?.Median, big.InstantiateAndDispose.Median, Target.Report, big.InstantiateAndDispose.Count, fork?.Reps,
            Program.Inv($"like for like with the peer's figure: Instantiate() plus the instance's Dispose() of each repetition of the row above; {big.InstantiateAndDispose.Spread} us"));

        // write watch listing
        yield return new Row($"WrittenPages over {size} with {Writes} written", "ns/written page", Better.Lower, "-", null, big.Listing.Median, Target.Report, big.Listing.Count, null,
            Program.Inv($"ResetWriteWatch(the {size} area), then {Writes} random pages written (8 bytes each; drawn as above), then WrittenPages(the area) timed, divided by {Writes}: {Report.Fmt(big.Listing.Median * Writes / 1e3)} us per call; checked: exactly the pages written, in address order; {big.Listing.Spread} ns"));

        // memory
        yield return new Row($"page-table bytes per mapped page, a {size} snapshot + 10 instances", "B/page", Better.Lower, "one copy (the source space's table)",
            big.OneCopyBytesPerPage, big.AllBytesPerPage, Target.Report, 1, 1,
            Program.Inv($"(snapshot.PageTableBytes + the 10 instances' Space.PageTableBytes) / {bytes / Page} mapped pages = {big.AllBytes} B / {bytes / Page}; the snapshot alone {Report.Fmt((double)big.SnapshotBytes / (bytes / Page))} B/page; one copy {Report.Fmt(big.OneCopyBytesPerPage)} B/page; ") +
            Program.Inv($"frames in use with the 10 instances {big.FramesWithInstances} (the area's {bytes / Page}: instances copy no page); the ratio says how many copies of the table there are (shared nodes would make it near 1)"));
    }

    private static bool HostCopiesOn => UVm.Host.HostCopies.Supported;

    private static string Describe(ResetCost r) => Program.Inv(
        $"{r.Config.Pattern.ToString().ToLowerInvariant()} pages, FaultAroundPages {r.Config.FaultAround}: per run {r.CowPages} pages copied on write by {r.CowFaults} faults, Reset() compared {r.Compared} pages (checked{(r.Config.FaultAround == 1 ? Program.Inv($" == {Writes}") : Program.Inv($" >= {Writes}"))}) with {r.ResetSyscalls} host syscalls (mmap of runs) and {r.ResetPunches} hole punches of freed copies, host mappings after the writes {r.MappingsAfterWrites}, after the reset {r.MappingsAfterReset}; checked after every reset: every written page reads the snapshot's contents again, no frame left but the snapshot's; ");

    private static string RunParts(ResetCost r) => Program.Inv(
        $"parts (medians): writes {Report.Fmt(r.WritesUs.Median)} us ({Report.Fmt(r.WritesUs.Median * 1e3 / Writes)} ns/page), Reset() {Report.Fmt(r.Reset.Median)} us; ") + Describe(r) + Program.Inv($"{r.Run.Spread} us");

    /// <summary>The pages of a run: <see cref="Writes"/> distinct random pages, or consecutive ones.</summary>
    internal enum Pattern { Random, Clustered }

    /// <summary>One reset configuration: how pages are drawn and the fault-around window.</summary>
    internal sealed record ResetConfig(Pattern Pattern, int FaultAround);

    /// <summary>What one reset configuration measured.</summary>
    /// <param name="Config">The pattern and the fault-around window.</param>
    /// <param name="Run">us per run (writes + Reset()).</param>
    /// <param name="WritesUs">us of the writes alone.</param>
    /// <param name="Reset">us of Reset() alone.</param>
    /// <param name="Compared">Pages Reset() compared, in the last run.</param>
    /// <param name="CowFaults">Copy-on-write faults of the last run.</param>
    /// <param name="CowPages">Pages those faults copied.</param>
    /// <param name="ResetSyscalls">Host syscalls of the last Reset().</param>
    /// <param name="MappingsAfterWrites">Host mappings of the arena after the last run's writes.</param>
    /// <param name="MappingsAfterReset">Host mappings of the arena after its reset.</param>
    /// <param name="ResetPunches">Hole punches of the pool (fallocate) during the last Reset() (freed copies, punched in batches of <see cref="FramePool.PunchBatchFrames"/>).</param>
    internal sealed record ResetCost(ResetConfig Config, Samples Run, Samples WritesUs, Samples Reset, int Compared, long CowFaults, long CowPages,
        long ResetSyscalls, int MappingsAfterWrites, int MappingsAfterReset, long ResetPunches);

    /// <summary>Everything measured on the one big space and its snapshot.</summary>
    internal sealed record Big(IReadOnlyList<ResetCost> Resets, Samples Instantiate, Samples InstanceDispose, Samples InstantiateAndDispose,
        long InstanceSyscalls, int InstanceMappings, Samples Listing, long SnapshotBytes, long OneCopyBytes, long AllBytes, ulong Pages, long FramesWithInstances)
    {
        public double OneCopyBytesPerPage => (double)OneCopyBytes / Pages;
        public double AllBytesPerPage => (double)AllBytes / Pages;
    }

    /// <summary>The four reset configurations measured on the big space, in this order.</summary>
    internal static readonly ResetConfig[] BigConfigs =
        [new(Pattern.Random, 1), new(Pattern.Random, 16), new(Pattern.Clustered, 16), new(Pattern.Clustered, 1)];

    /// <summary>
    /// One space of <c>2 × bytes</c> with an area of <paramref name="bytes"/> written whole and
    /// snapshotted: the reset configurations (<see cref="BigConfigs"/>), instantiation, the
    /// write-watch listing and the page-table bytes of the snapshot and <paramref name="instances"/> instances.
    /// </summary>
    internal static Big MeasureBig(ulong bytes, int warmups, int reps, int writes, int instances)
    {
        ulong pages = bytes / Page;
        var area = VaddrRange.FromLength(AreaBase, bytes);
        return WithPool(pool =>
        {
            using var space = new AddressSpace(new VmSpaceOptions { Size = 2 * bytes, Pool = pool });
            space.Map(bytes, new AreaBackend.Alloc(Populate: true), new VmMapOptions { Addr = AreaBase, Flags = PageFlags.RW });
            WriteStamped(space, AreaBase, pages);
            long oneCopy = space.Space.PageTableBytes;
            using VmSnapshot snapshot = space.Snapshot();
            var resets = new List<ResetCost>();
            foreach (ResetConfig config in BigConfigs) resets.Add(MeasureResetsOn(space, snapshot, pool, pages, warmups, reps, writes, config));

            // instantiate
            var instDispose = new List<double>();
            var instBoth = new List<double>();
            long instSys = 0;
            int instMappings = 0, made = 0;
            Samples instantiate = Sampler.Run(warmups, reps,
                reset: () => { },
                sample: () =>
                {
                    long t0 = Stopwatch.GetTimestamp();
                    AddressSpace inst = snapshot.Instantiate();
                    long t1 = Stopwatch.GetTimestamp();
                    long t2;
                    try
                    {
                        instSys = inst.Space.HostStats.Syscalls;
                        instMappings = inst.Space.CountHostMappings();
                        if (pool.FramesInUse != (long)pages) throw new InvalidOperationException($"instantiating allocated frames: {pool.FramesInUse} in use for {pages} pages");
                        if (inst.Areas.Count != 1) throw new InvalidOperationException("the instance has not the snapshot's area");
                        if (made++ < warmups) CheckImage(inst, AreaBase, pages, "an instance");
                    }
                    finally
                    {
                        t2 = Stopwatch.GetTimestamp();
                        inst.Dispose();
                    }
                    long t3 = Stopwatch.GetTimestamp();
                    instDispose.Add(Sampler.Ns(t2, t3) / 1e3);
                    instBoth.Add((Sampler.Ns(t0, t1) + Sampler.Ns(t2, t3)) / 1e3);
                    return Sampler.Ns(t0, t1) / 1e3;
                });
            space.Space.Activate();

            // write watch listing
            var state = new PageDraw(PageDraw.Seed);
            ulong[] written = [];
            Samples listing = Sampler.Run(warmups, reps,
                reset: () =>
                {
                    space.Reset(snapshot);
                    space.ResetWriteWatch(area);
                    written = state.Random(pages, writes);
                    WritePages(space, written);
                },
                sample: () =>
                {
                    long t0 = Stopwatch.GetTimestamp();
                    IReadOnlyList<ulong> listed = space.WrittenPages(area);
                    long t1 = Stopwatch.GetTimestamp();
                    ulong[] want = written.Select(p => AreaBase + p * Page).Order().ToArray();
                    if (!listed.SequenceEqual(want)) throw new InvalidOperationException($"WrittenPages listed {listed.Count} pages, {writes} were written (or not these, or not in order)");
                    return Sampler.Ns(t0, t1) / writes;
                });
            space.Reset(snapshot);
            CheckImage(space, AreaBase, pages, "the space after the last reset");

            // memory: the snapshot and its instances
            var made10 = new List<AddressSpace>();
            try
            {
                for (int i = 0; i < instances; i++) made10.Add(snapshot.Instantiate());
                long frames = pool.FramesInUse;
                long all = snapshot.PageTableBytes + made10.Sum(s => s.Space.PageTableBytes);
                return new Big(resets, instantiate, Counted(instDispose, reps), Counted(instBoth, reps), instSys, instMappings, listing,
                    snapshot.PageTableBytes, oneCopy, all, pages, frames);
            }
            finally
            {
                foreach (AddressSpace inst in made10) inst.Dispose();
            }
        });
    }

    /// <summary>The reset configurations <paramref name="configs"/> on a fresh space of <paramref name="spaceSize"/> with an area of <paramref name="bytes"/> and its snapshot.</summary>
    internal static IReadOnlyList<ResetCost> MeasureResets(ulong spaceSize, ulong bytes, int warmups, int reps, int writes, IReadOnlyList<ResetConfig> configs)
    {
        ulong pages = bytes / Page;
        return WithPool(pool =>
        {
            using var space = new AddressSpace(new VmSpaceOptions { Size = spaceSize, Pool = pool });
            space.Map(bytes, new AreaBackend.Alloc(Populate: true), new VmMapOptions { Addr = AreaBase, Flags = PageFlags.RW });
            WriteStamped(space, AreaBase, pages);
            using VmSnapshot snapshot = space.Snapshot();
            return configs.Select(c => MeasureResetsOn(space, snapshot, pool, pages, warmups, reps, writes, c)).ToList();
        });
    }

    /// <summary>
    /// Runs of <paramref name="config"/> on <paramref name="space"/> (equal to <paramref name="snapshot"/>
    /// when called, and again when this returns): write the pages drawn, reset; each checked.
    /// </summary>
    private static ResetCost MeasureResetsOn(AddressSpace space, VmSnapshot snapshot, FramePool pool, ulong pages, int warmups, int reps, int writes, ResetConfig config)
    {
        space.FaultAroundPages = config.FaultAround;
        space.Space.Activate();
        long baseline = pool.FramesInUse;
        var state = new PageDraw(PageDraw.Seed);
        var writesUs = new List<double>();
        var resetUs = new List<double>();
        ulong[] targets = [];
        int compared = 0, afterWrites = 0, afterReset = 0;
        long cowFaults = 0, cowPages = 0, resetSys = 0, resetPunches = 0;
        Samples run = Sampler.Run(warmups, reps,
            reset: () => targets = config.Pattern == Pattern.Random ? state.Random(pages, writes) : state.Clustered(pages, writes),
            sample: () =>
            {
                long f0 = space.Stats.CopyOnWriteCopies, p0 = space.Stats.CopyOnWritePages;
                long t0 = Stopwatch.GetTimestamp();
                WritePages(space, targets);
                long t1 = Stopwatch.GetTimestamp();
                long sys0 = space.Space.HostStats.Syscalls, punch0 = pool.PunchCalls;
                long t2 = Stopwatch.GetTimestamp();
                compared = space.Reset(snapshot);
                long t3 = Stopwatch.GetTimestamp();
                resetSys = space.Space.HostStats.Syscalls - sys0;
                resetPunches = pool.PunchCalls - punch0;
                cowFaults = space.Stats.CopyOnWriteCopies - f0;
                cowPages = space.Stats.CopyOnWritePages - p0;
                // Untimed checks: what the reset compared, what it put back, what it freed.
                if (config.FaultAround == 1 ? compared != writes : compared < writes)
                    throw new InvalidOperationException($"Reset() compared {compared} pages after {writes} page writes with fault-around {config.FaultAround}");
                if (space.Space.UnresolvedFaults != 0) throw new InvalidOperationException($"{space.Space.UnresolvedFaults} unresolved faults");
                CheckStamps(space, targets);
                if (pool.FramesInUse != baseline) throw new InvalidOperationException($"{pool.FramesInUse - baseline} frames left after the reset");
                DropCheckReads(space, pages);
                writesUs.Add(Sampler.Ns(t0, t1) / 1e3);
                resetUs.Add(Sampler.Ns(t2, t3) / 1e3);
                return (Sampler.Ns(t0, t1) + Sampler.Ns(t2, t3)) / 1e3;
            });
        // The host mappings of one more run, outside the samples (reading /proc/self/maps is slow).
        targets = config.Pattern == Pattern.Random ? state.Random(pages, writes) : state.Clustered(pages, writes);
        WritePages(space, targets);
        afterWrites = space.Space.CountHostMappings();
        space.Reset(snapshot);
        afterReset = space.Space.CountHostMappings();
        return new ResetCost(config, run, Counted(writesUs, reps), Counted(resetUs, reps), compared, cowFaults, cowPages, resetSys, afterWrites, afterReset, resetPunches);
    }

    // ---- 2. fork of a space with 1 GiB resident ------------------------------------------------

    private static IEnumerable<Row> ForkRows(Settings s, PeerResults peers)
    {
        PeerFigure? fork = peers.Get("fork_kernel", "us_per_fork");
        ulong bytes = Resident(s);
        AreaBenchmarks.ForkCost f = AreaBenchmarks.MeasureFork(bytes, s.Warmups, s.Reps, rewriteParent: false);
        yield return new Row($"Fork() of a space with {Size(bytes)} resident, already write-protected", "us/fork", Better.Lower, "Linux fork (fork_kernel)",
            fork?.Median, f.Fork.Median, Target.RatioAtMost(0.1), f.Fork.Count, fork?.Reps,
            (fork is null ? peers.Missing("fork_kernel") + "; " : Program.Inv($"the peer's figure is fork() -> _exit(0) -> waitpid; its fork() call alone {Report.Fmt(fork.Number("fork_call_us"))} us (Fork() is {FmtRatio(f.Fork.Median / fork.Number("fork_call_us"))} of that); ")) +
            Program.Inv($"AreaBenchmarks.MeasureFork (the areas suite's fork row, judged here against the snapshot issue's target): an Alloc(populate) area of {Size(bytes)} written whole, forked again and again (write-protected after the first, warm-up, fork), Fork() alone timed; ") +
            Program.Inv($"per fork: parent {f.ParentSyscalls} host syscalls, child {f.ChildSyscalls}, child host mappings {f.ChildMappings}; child Dispose() {Report.Fmt(f.Dispose.Median)} us; Fork() {f.Fork.Spread} us"));
    }

    // ---- 3. the first write to a watched page ---------------------------------------------------

    private static Row WatchFaultRow(Settings s, PeerResults peers)
    {
        PeerFigure? raw = peers.Get("fault_roundtrip_raw", "ns_per_fault");
        ulong pages = (ulong)(raw?.Number("pages") ?? (s.Quick ? 4096 : 65536));
        WatchFault w = MeasureWatchFault(pages, s.Warmups, s.Reps);
        return new Row("first tracked write after ResetWriteWatch", "ns/fault", Better.Lower, "raw C SIGSEGV resolver (fault_roundtrip_raw)",
            raw?.Median, w.Samples.Median, Target.RatioAtMost(1.0), w.Samples.Count, raw?.Reps,
            (raw is null ? peers.Missing("fault_roundtrip_raw") + "; " : "the peer resolves a read of a PROT_NONE page with one mmap of a memfd page in its SIGSEGV handler; ") +
            Program.Inv($"here an Alloc(populate) RW area of {pages} pages written whole (no snapshot: every page private, writable), ResetWriteWatch(the area) untimed, then one Writer(va, len) and WriteVal<ulong> + Skip(4088) per page in address order, the loop timed, divided by pages; ") +
            Program.Inv($"per repetition {w.Faults} write faults handled (checked == pages), {w.Syscalls} host syscalls (one mprotect per page), WrittenPages then lists every page (checked); {w.Samples.Spread} ns"));
    }

    /// <summary>What one write-watch fault measurement saw.</summary>
    internal sealed record WatchFault(Samples Samples, long Faults, long Syscalls);

    /// <summary>ns per first write to each page of a watched, private, resident area of <paramref name="pages"/> pages.</summary>
    internal static WatchFault MeasureWatchFault(ulong pages, int warmups, int reps)
    {
        ulong len = pages * Page;
        var area = VaddrRange.FromLength(AreaBase, len);
        long faults = 0, syscalls = 0;
        return WithPool(pool =>
        {
            using var space = new AddressSpace(new VmSpaceOptions { Size = AreaBase + ((len + 2 * MiB - 1) & ~(2 * MiB - 1)), Pool = pool });
            space.Map(len, new AreaBackend.Alloc(Populate: true), new VmMapOptions { Addr = AreaBase, Flags = PageFlags.RW });
            WriteStamped(space, AreaBase, pages);
            space.Space.Activate();
            Samples samples = Sampler.Run(warmups, reps,
                reset: () => space.ResetWriteWatch(area),
                sample: () =>
                {
                    long h0 = space.Space.HandledFaults, sys0 = space.Space.HostStats.Syscalls;
                    long t0 = Stopwatch.GetTimestamp();
                    VmWriter<Fallible> w = space.Space.Writer(AreaBase, len);
                    for (ulong i = 0; i < pages; i++)
                    {
                        if (!w.WriteVal(i).IsOk) throw new InvalidOperationException($"the write to page {i} failed");
                        w.Skip(Page - 8);
                    }
                    long t1 = Stopwatch.GetTimestamp();
                    faults = space.Space.HandledFaults - h0;
                    syscalls = space.Space.HostStats.Syscalls - sys0;
                    if (faults != (long)pages) throw new InvalidOperationException($"expected {pages} write faults, saw {faults}");
                    if (space.WrittenPages(area).Count != (int)pages) throw new InvalidOperationException("WrittenPages does not list every page written");
                    return Sampler.Ns(t0, t1) / pages;
                });
            CheckImage(space, AreaBase, pages, "the watched area after its writes");
            return new WatchFault(samples, faults, syscalls);
        });
    }

    // ---- pages and contents ----------------------------------------------------------------------

    /// <summary>
    /// The peers' page draw (<c>benchmarks/peers/pages.h</c>), so one seed names the same pages in
    /// C and in C#: splitmix64; random = distinct pages, <c>next() % total</c> redrawn when taken,
    /// in the order drawn; clustered = consecutive pages from <c>next() % (total - n + 1)</c>.
    /// </summary>
    internal sealed class PageDraw(ulong seed)
    {
        /// <summary>The peers' PEER_SEED.</summary>
        internal const ulong Seed = 0x5eed5eedUL;

        private ulong _state = seed;

        private ulong Next()
        {
            ulong z = _state += 0x9e3779b97f4a7c15UL;
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9UL;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebUL;
            return z ^ (z >> 31);
        }

        internal ulong[] Random(ulong total, int n)
        {
            var taken = new HashSet<ulong>();
            var pages = new ulong[n];
            for (int i = 0; i < n;)
            {
                ulong x = Next() % total;
                if (taken.Add(x)) pages[i++] = x;
            }
            return pages;
        }

        internal ulong[] Clustered(ulong total, int n)
        {
            ulong start = Next() % (total - (ulong)n + 1);
            var pages = new ulong[n];
            for (int i = 0; i < n; i++) pages[i] = start + (ulong)i;
            return pages;
        }
    }

    /// <summary>What a run writes into page <paramref name="p"/> (never its index, so a reset shows).</summary>
    private static ulong Marker(ulong p) => 0xfeedfacecafef00dUL ^ p;

    /// <summary>Writes 8 bytes into each page of <paramref name="pages"/> (area page numbers), one fallible writer each.</summary>
    private static void WritePages(AddressSpace space, ulong[] pages)
    {
        foreach (ulong p in pages)
        {
            VmWriter<Fallible> w = space.Space.Writer(AreaBase + p * Page, 8);
            if (!w.WriteVal(Marker(p)).IsOk) throw new InvalidOperationException($"the write to page {p} failed");
        }
    }

    /// <summary>Checks that each page of <paramref name="pages"/> reads its index again (the snapshot's contents).</summary>
    /// <summary>
    /// As the image-reset peer does after its check: drops the host page-table entries the check's
    /// reads installed, so the next run starts as a fresh instance would, with nothing mapped on
    /// the host (a reset keeps what the guest read mapped, and finding the copies costs a little
    /// for each mapped page). After a reset the space holds no host copy (checked), so this changes
    /// no contents: the pages read their frames again on the next access.
    /// </summary>
    private static void DropCheckReads(AddressSpace space, ulong pages)
    {
        var copies = new List<(ulong Start, ulong End)>();
        if (space.Space.MayHoldHostCopies) space.Space.FindHostCopies(AreaBase, AreaBase + pages * Page, copies);
        if (copies.Count != 0) throw new InvalidOperationException($"{copies.Count} runs of host copies left after a reset");
        if (Libc.Madvise(space.Space.HostBase + (nint)AreaBase, (nuint)(pages * Page), Libc.MADV_DONTNEED) != 0)
            throw new InvalidOperationException("madvise(DONTNEED) of the area refused");
    }

    private static void CheckStamps(AddressSpace space, ulong[] pages)
    {
        foreach (ulong p in pages)
        {
            VmReader<Fallible> r = space.Space.Reader(AreaBase + p * Page, 8);
            IoResult<ulong> v = r.ReadVal<ulong>();
            if (!v.IsOk || v.Value != p) throw new InvalidOperationException($"after the reset page {p} reads {(v.IsOk ? $"0x{v.Value:x}" : v.Error.ToString())}, not the snapshot's {p}");
        }
    }



    /// <summary>Reads every page of <c>[va, va + pages)</c> back and compares it with the image (2 MiB per fallible copy).</summary>
    private static void CheckImage(AddressSpace space, ulong va, ulong pages, string what)
    {
        space.Space.Activate();
        var actual = new byte[ChunkPages * Page];
        var want = new byte[Page];
        for (ulong first = 0; first < pages; first += ChunkPages)
        {
            ulong n = Math.Min(pages - first, ChunkPages);
            VmReader<Fallible> r = space.Space.Reader(va + first * Page, n * Page);
            CopyResult res = r.ReadFallible(actual.AsSpan(0, (int)(n * Page)));
            if (!res.IsOk) throw new InvalidOperationException($"{what}: reading page {first + res.Bytes / Page} failed: {res.Error}");
            for (ulong i = 0; i < n; i++)
            {
                StampedPage(first + i, want);
                Span<byte> got = actual.AsSpan((int)(i * Page), (int)Page);
                // The watch row writes each page's index over its first 8 bytes: the same bytes.
                if (!got.SequenceEqual(want)) throw new InvalidOperationException($"{what}: page {first + i} does not hold the image");
            }
        }
    }

    // ---- harness -----------------------------------------------------------------------------------

    /// <summary><see cref="Scenario.WithPool"/> with a pool of <see cref="PoolSize"/> bytes.</summary>
    private static T WithPool<T>(Func<FramePool, T> run) => Scenario.WithPool(PoolSize, run);


    private static string FmtRatio(double? x) => x is { } r ? Program.Inv($"{r:F2}x") : "-";



}
