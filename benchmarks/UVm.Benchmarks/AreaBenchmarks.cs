using System.Diagnostics;
using UVm.Areas;
using UVm.Faults;
using UVm.Frames;
using UVm.Host;
using UVm.Io;
using UVm.Spaces;
using UVm.Interop;

using static UVm.Benchmarks.Scenario;

namespace UVm.Benchmarks;

/// <summary>
/// The areas layer (<see cref="AddressSpace"/>) against the kernel doing the same job for a
/// process (<c>benchmarks/peers/first_touch.c</c>, <c>fork_peer.c</c>), at the peers' sizes:
/// <list type="bullet">
/// <item><b>first touch</b>: one fallible <c>WriteVal&lt;byte&gt;</c> per page of a fresh lazy
/// <c>Alloc</c> area (demand-zero faults with fault-around) vs the kernel's anonymous demand paging.</item>
/// <item><b>fork</b>: <see cref="AddressSpace.Fork"/> of a space with a resident, written area vs <c>fork()</c>.</item>
/// <item><b>write after fork</b>: fork, the child writes one byte per page (a copy-on-write copy
/// each), the child is disposed; vs fork, child writes, <c>_exit</c>, reap.</item>
/// <item><b>host mappings</b>: the VMAs of parent and child after random copy-on-write writes (no peer).</item>
/// <item><b>image</b> and <b>on-demand</b> areas: see <c>AreaBenchmarks.Backends.cs</c>.</item>
/// </list>
/// Every scenario has its own <see cref="FramePool"/> and checks it is empty at the end; the
/// contents are verified outside the timed regions.
/// </summary>
internal static partial class AreaBenchmarks
{
    private const ulong Page = Paging.PageSize;
    private const ulong MiB = 1UL << 20;
    private const ulong AreaBase = 1UL << 30;     // areas start at guest 1 GiB, 2 MiB aligned
    private const ulong SpaceSize = 4UL << 30;
    private const ulong PoolSize = 4UL << 30;     // sparse: only what the scenario touches is resident
    private const byte Fill = StampFill;          // what the parent writes after each page's index, as the fork peer does
    private const ulong ChunkPages = FramePool.ChunkFrames; // pages per 2 MiB, the unit of the bulk copies

    /// <summary>The <c>vm.max_map_count</c> default the host-mappings row is set against.</summary>
    internal const int DefaultMaxMapCount = 65530;

    internal static IEnumerable<Row> Run(Settings s, PeerResults peers)
    {
        foreach (Row r in GuardMany("first touch lazily allocated", () => FirstTouchRows(s, peers))) yield return r;
        foreach (Row r in GuardMany("fork of a space with memory resident", () => ForkRows(s, peers))) yield return r;
        yield return Guard("write every page after fork (COW)", () => CowWriteRow(s, peers));
        yield return Guard(HostMappingsScenario(s), () => HostMappingsRow(s));
        yield return Guard("map a 64 MiB image", () => ImageMapRow(s));
        yield return Guard("on-demand fill round trip", () => OnDemandRow(s, peers));
    }

    // ---- 1. first touch -----------------------------------------------------------------

    private static IEnumerable<Row> FirstTouchRows(Settings s, PeerResults peers)
    {
        PeerFigure? peer = peers.Get("first_touch_kernel", "ns_per_page");
        ulong pages = (ulong)(peer?.Number("pages") ?? (s.Quick ? 4096 : 65536));
        FirstTouch t = MeasureFirstTouch(pages, s.Warmups, s.Reps);
        FirstTouch wide = MeasureFirstTouch(pages, s.Warmups, s.Reps, faultAround: 512);
        Samples floor = MeasureShmemFirstTouch(pages, s.Warmups, s.Reps);
        string size = Size(pages * Page);
        string floorNote = Program.Inv($"host floor in this run: a fresh memfd mapped MAP_SHARED, one byte written per page (a shmem page fault each, no UVm) {Report.Fmt(floor.Median)} ns/page; UVm's frames are memfd pages, the peer's anonymous pages");
        string note = Program.Inv(
            $"a fresh lazy Alloc area of {pages} pages (RW, 2 MiB aligned) per repetition; one Writer(va, len) and WriteVal<byte> + Skip(4095) per page, the loop timed; ") +
            Counts(t) +
            Program.Inv($"every page read back (written byte, zeros after) outside the timing; between repetitions the area is unmapped and the pool trimmed (hole-punched), like the peer's munmap; {t.Samples.Spread} ns; ") + floorNote;
        yield return new Row($"first touch {size} lazily allocated", "ns/page", Better.Lower, "kernel demand paging (first_touch_kernel)",
            peer?.Median, t.Samples.Median, Target.RatioAtMost(1.0), t.Samples.Count, peer?.Reps, peer is null ? peers.Missing("first_touch_kernel") + "; " + note : note);
        yield return new Row($"first touch {size} lazily allocated, fault-around 512", "ns/page", Better.Lower, "kernel demand paging (first_touch_kernel)",
            peer?.Median, wide.Samples.Median, Target.Report, wide.Samples.Count, peer?.Reps,
            "the same with FaultAroundPages = 512 (one fault per 2 MiB; the default is 16): " + Counts(wide) + wide.Samples.Spread + " ns");
    }

    private static string Counts(FirstTouch t) => Program.Inv(
        $"fault-around {t.FaultAround} pages: DemandZeroFaults {t.Faults} per repetition (checked == pages / {t.FaultAround}), DemandZeroPages {t.Pages} (checked == pages), host syscalls {t.Syscalls} (one mmap(MAP_POPULATE) per window); ");

    /// <summary>What one first-touch measurement saw.</summary>
    /// <param name="Samples">ns per page, per counted repetition.</param>
    /// <param name="FaultAround">The fault-around window, in pages.</param>
    /// <param name="Faults">Demand-zero faults of one repetition.</param>
    /// <param name="Pages">Pages given frames by those faults.</param>
    /// <param name="Syscalls">Host syscalls of one repetition's timed loop.</param>
    internal sealed record FirstTouch(Samples Samples, int FaultAround, long Faults, long Pages, long Syscalls);

    /// <summary>ns per page of the first write to each page of a fresh lazy area of <paramref name="pages"/> pages.</summary>
    internal static FirstTouch MeasureFirstTouch(ulong pages, int warmups, int reps, int? faultAround = null)
    {
        ulong len = pages * Page;
        var range = VaddrRange.FromLength(AreaBase, len);
        long faults = 0, filled = 0, syscalls = 0;
        return WithPool(pool =>
        {
            using var space = new AddressSpace(new VmSpaceOptions { Size = SpaceSize, Pool = pool });
            if (faultAround is { } fa) space.FaultAroundPages = fa;
            int window = space.FaultAroundPages;
            space.Space.Activate();
            Samples samples = Sampler.Run(warmups, reps,
                reset: () =>
                {
                    if (space.Areas.Count > 0) space.Unmap(range);
                    pool.Trim();
                    CheckEmpty(pool, "after unmapping the area", noReservations: false); // a region only partly unmapped keeps its chunk
                    space.Map(len, new AreaBackend.Alloc(Populate: false), new VmMapOptions { Addr = AreaBase, Flags = PageFlags.RW });
                },
                sample: () =>
                {
                    long f0 = space.Stats.DemandZeroFaults, p0 = space.Stats.DemandZeroPages, sys0 = space.Space.HostStats.Syscalls;
                    long t0 = Stopwatch.GetTimestamp();
                    VmWriter<Fallible> w = space.Space.Writer(AreaBase, len);
                    for (ulong i = 0; i < pages; i++)
                    {
                        if (!w.WriteVal(Stamp(i)).IsOk) throw new InvalidOperationException($"the write to page {i} failed");
                        w.Skip(Page - 1);
                    }
                    long t1 = Stopwatch.GetTimestamp();
                    syscalls = space.Space.HostStats.Syscalls - sys0;
                    faults = space.Stats.DemandZeroFaults - f0;
                    filled = space.Stats.DemandZeroPages - p0;
                    ulong expected = (pages + (ulong)window - 1) / (ulong)window;
                    if (faults != (long)expected) throw new InvalidOperationException($"expected {expected} demand-zero faults, saw {faults}");
                    if (filled != (long)pages) throw new InvalidOperationException($"expected {pages} demand-zero pages, saw {filled}");
                    if (space.Space.UnresolvedFaults != 0) throw new InvalidOperationException($"{space.Space.UnresolvedFaults} unresolved faults");
                    CheckPages(space, AreaBase, pages, "first touch", (i, page) => { page.Clear(); page[0] = Stamp(i); });
                    return Sampler.Ns(t0, t1) / pages;
                });
            return new FirstTouch(samples, window, faults, filled, syscalls);
        });
    }

    /// <summary>
    /// The host's own cost of what UVm's frames are: ns per page of writing one byte to each
    /// page of a fresh memfd mapped <c>MAP_SHARED</c> (one shmem page fault each), no UVm involved.
    /// </summary>
    internal static Samples MeasureShmemFirstTouch(ulong pages, int warmups, int reps)
    {
        ulong len = pages * Page;
        int fd = Libc.MemfdCreate("uvm-bench-floor", Libc.MFD_CLOEXEC);
        if (fd < 0) HostCall.Fail("memfd_create");
        nint map = 0;
        try
        {
            HostCall.Check(Libc.Ftruncate(fd, (long)len), "ftruncate");
            return Sampler.Run(warmups, reps,
                reset: () =>
                {
                    if (map != 0) HostCall.Check(Libc.Munmap(map, (nuint)len), "munmap");
                    HostCall.Check(Libc.Fallocate(fd, Libc.FALLOC_FL_PUNCH_HOLE | Libc.FALLOC_FL_KEEP_SIZE, 0, (long)len), "punch");
                    map = HostCall.CheckMap(Libc.Mmap(0, (nuint)len, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED, fd, 0), "mmap of the memfd");
                },
                sample: () =>
                {
                    long t0 = Stopwatch.GetTimestamp();
                    unsafe
                    {
                        // SAFETY: map covers len bytes, mapped read-write just now.
                        for (ulong i = 0; i < pages; i++) *(byte*)(map + (nint)(i * Page)) = 1;
                    }
                    long t1 = Stopwatch.GetTimestamp();
                    return Sampler.Ns(t0, t1) / pages;
                });
        }
        finally
        {
            if (map != 0) Libc.Munmap(map, (nuint)len);
            Libc.Close(fd);
        }
    }

    /// <summary>The byte written at the start of page <paramref name="i"/> (never zero, never <see cref="Fill"/>).</summary>
    private static byte Stamp(ulong i) => (byte)(i % 89 + 1);

    // ---- 2. fork ------------------------------------------------------------------------

    private static IEnumerable<Row> ForkRows(Settings s, PeerResults peers)
    {
        PeerFigure? peer = peers.Get("fork_kernel", "us_per_fork");
        ulong bytes = (ulong)(peer?.Number("resident_mib") ?? (s.Quick ? 64 : 1024)) * MiB;
        ForkCost f = MeasureFork(bytes, s.Warmups, s.Reps, rewriteParent: false);
        ForkCost w = MeasureFork(bytes, 1, s.Reps, rewriteParent: true);
        Samples floor = MeasureShmemWriteProtect(bytes / Page, 1, s.Reps);
        string size = Size(bytes);
        string peerSays = peer is null ? peers.Missing("fork_kernel")
            : Program.Inv($"the peer's figure is fork() -> child _exit(0) -> waitpid; its parent-side fork() call alone {Report.Fmt(peer.Number("fork_call_us"))} us (UVm's Fork() is {FmtRatio(f.Fork.Median / peer.Number("fork_call_us"))} of that)");
        yield return new Row($"fork of a space with {size} resident", "us/fork", Better.Lower, "Linux fork (fork_kernel)",
            peer?.Median, f.Fork.Median, Target.RatioAtMost(0.5), f.Fork.Count, peer?.Reps,
            Program.Inv($"parent: an Alloc(populate) RW area of {size} written whole once (0x{Fill:X2}, each page stamped with its index), then forked again and again like the peer's parent (after the first, warm-up, fork its pages stay write-protected, in the kernel as in UVm); ") +
            Program.Inv($"Fork() alone timed; each child checked (no frame allocated, the parent's area, host mappings installed; in the warm-ups also every page's stamp read through the child's own reader without a fault) and disposed outside that timing: child Dispose() median {Report.Fmt(f.Dispose.Median)} us ({f.Dispose.Spread}); ") +
            Program.Inv($"per fork: parent {f.ParentSyscalls} host syscalls, child {f.ChildSyscalls} (mmap of its runs), child host mappings {f.ChildMappings}; Fork() {f.Fork.Spread} us; ") + peerSays);
        yield return new Row($"fork + dispose of the child, {size} resident", "us/fork", Better.Lower, "Linux fork + _exit + reap (fork_kernel)",
            peer?.Median, f.ForkAndDispose.Median, Target.Report, f.ForkAndDispose.Count, peer?.Reps,
            Program.Inv($"like for like with the peer's figure: Fork() plus the child's Dispose() of each repetition of the row above (the peer's child exits and is reaped); {f.ForkAndDispose.Spread} us"));
        yield return new Row($"fork of a space with {size} resident, parent writable", "us/fork", Better.Lower, "Linux fork (fork_kernel)",
            peer?.Median, w.Fork.Median, Target.Report, w.Fork.Count, peer?.Reps,
            Program.Inv($"as the first fork row, but before every fork the parent writes every page again (Prefault(Write): a take-over each, W back), so each Fork() must write-protect {size} of resident pages: ") +
            Program.Inv($"parent {w.ParentSyscalls} host syscalls per fork (one mprotect(PROT_READ) of the run); host floor in this run: one raw mprotect(PROT_READ) of a resident, written {size} MAP_SHARED memfd mapping takes {Report.Fmt(floor.Median)} us ({floor.Spread}); ") +
            Program.Inv($"child Dispose() {Report.Fmt(w.Dispose.Median)} us; Fork() {w.Fork.Spread} us"));
    }

    private static string FmtRatio(double? x) => x is { } r ? Program.Inv($"{r:F2}x") : "-";

    /// <summary>What one fork measurement saw.</summary>
    /// <param name="Fork">us per <see cref="AddressSpace.Fork"/>.</param>
    /// <param name="Dispose">us per child <see cref="AddressSpace.Dispose"/>.</param>
    /// <param name="ForkAndDispose">us of both, per repetition.</param>
    /// <param name="ParentSyscalls">Host syscalls the parent's space made during one fork.</param>
    /// <param name="ChildSyscalls">Host syscalls the child's space made during its fork.</param>
    /// <param name="ChildMappings">Host mappings of the child's arena after the fork.</param>
    internal sealed record ForkCost(Samples Fork, Samples Dispose, Samples ForkAndDispose, long ParentSyscalls, long ChildSyscalls, int ChildMappings);

    /// <summary>
    /// us per fork of a space with <paramref name="bytes"/> resident and written. With
    /// <paramref name="rewriteParent"/> the parent writes every page again before each fork
    /// (untimed), so every fork finds it writable.
    /// </summary>
    internal static ForkCost MeasureFork(ulong bytes, int warmups, int reps, bool rewriteParent)
    {
        ulong pages = bytes / Page;
        var range = VaddrRange.FromLength(AreaBase, bytes);
        var dispose = new List<double>();
        var both = new List<double>();
        long parentSys = 0, childSys = 0;
        int childMappings = 0, forks = 0;
        return WithPool(pool =>
        {
            Samples fork;
            using (var parent = new AddressSpace(new VmSpaceOptions { Size = SpaceSize, Pool = pool }))
            {
                parent.Map(bytes, new AreaBackend.Alloc(Populate: true), new VmMapOptions { Addr = AreaBase, Flags = PageFlags.RW });
                WriteStamped(parent, AreaBase, pages);
                fork = Sampler.Run(warmups, reps,
                    reset: () =>
                    {
                        if (rewriteParent) parent.Prefault(range, PageFaultAccess.Write);
                    },
                    sample: () =>
                    {
                        long sys0 = parent.Space.HostStats.Syscalls;
                        long t0 = Stopwatch.GetTimestamp();
                        AddressSpace child = parent.Fork();
                        long t1 = Stopwatch.GetTimestamp();
                        long t2;
                        try
                        {
                            parentSys = parent.Space.HostStats.Syscalls - sys0;
                            childSys = child.Space.HostStats.Syscalls;
                            childMappings = child.Space.CountHostMappings();
                            if (pool.FramesInUse != (long)pages) throw new InvalidOperationException($"fork allocated frames: {pool.FramesInUse} in use for {pages} pages");
                            if (child.Areas.Count != 1 || childSys == 0) throw new InvalidOperationException("the child has not the parent's area, or no host mapping");
                            // Reading fills the child's host page tables, which its Dispose then tears down: read only in the warm-ups.
                            if (forks++ < warmups)
                            {
                                CheckStamps(child, AreaBase, pages, "the child after fork");
                                if (child.Space.HandledFaults + child.Space.SpuriousFaults != 0) throw new InvalidOperationException("the child faulted on reading: its host mappings were not installed at fork");
                            }
                        }
                        finally
                        {
                            t2 = Stopwatch.GetTimestamp();
                            child.Dispose();
                        }
                        long t3 = Stopwatch.GetTimestamp();
                        dispose.Add(Sampler.Ns(t2, t3) / 1e3);
                        both.Add((Sampler.Ns(t0, t1) + Sampler.Ns(t2, t3)) / 1e3);
                        return Sampler.Ns(t0, t1) / 1e3;
                    });
                CheckStamps(parent, AreaBase, pages, "the parent after the forks");
            }
            return new ForkCost(fork, Counted(dispose, reps), Counted(both, reps), parentSys, childSys, childMappings);
        });
    }

    /// <summary>
    /// The host's own cost of write-protecting what a fork must: us per <c>mprotect(PROT_READ)</c>
    /// of a fresh memfd mapping of <paramref name="pages"/> pages, every page written just before.
    /// </summary>
    internal static Samples MeasureShmemWriteProtect(ulong pages, int warmups, int reps)
    {
        ulong len = pages * Page;
        int fd = Libc.MemfdCreate("uvm-bench-floor", Libc.MFD_CLOEXEC);
        if (fd < 0) HostCall.Fail("memfd_create");
        nint map = 0;
        try
        {
            HostCall.Check(Libc.Ftruncate(fd, (long)len), "ftruncate");
            map = HostCall.CheckMap(Libc.Mmap(0, (nuint)len, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED, fd, 0), "mmap of the memfd");
            return Sampler.Run(warmups, reps,
                reset: () =>
                {
                    HostCall.Check(Libc.Mprotect(map, (nuint)len, Libc.PROT_READ | Libc.PROT_WRITE), "mprotect RW");
                    unsafe
                    {
                        // SAFETY: map covers len bytes and is read-write again.
                        for (ulong i = 0; i < pages; i++) *(byte*)(map + (nint)(i * Page)) = Fill;
                    }
                },
                sample: () =>
                {
                    long t0 = Stopwatch.GetTimestamp();
                    HostCall.Check(Libc.Mprotect(map, (nuint)len, Libc.PROT_READ), "mprotect R");
                    long t1 = Stopwatch.GetTimestamp();
                    return Sampler.Ns(t0, t1) / 1e3;
                });
        }
        finally
        {
            if (map != 0) Libc.Munmap(map, (nuint)len);
            Libc.Close(fd);
        }
    }

    // ---- 3. write every page after fork ----------------------------------------------------

    private static Row CowWriteRow(Settings s, PeerResults peers)
    {
        PeerFigure? peer = peers.Get("fork_cow_write_kernel", "ns_per_page");
        ulong pages = (ulong)(peer?.Number("pages") ?? (s.Quick ? 4096 : 65536));
        CowWrite c = MeasureCowWrite(pages, s.Warmups, s.Reps);
        CowWrite direct = MeasureCowWrite(pages, 1, s.Reps, resolveOnly: true);
        PeerFigure? mmapPerPage = peers.Get("map_dispatch_raw_per_page", "ns_per_page");
        string note = Program.Inv(
            $"measured like the peer, which times fork -> the child writes one byte per page -> _exit -> reap, divided by pages: here Fork() + the child's one Writer(va, len) with WriteVal<byte> + Skip(4095) per page + the child's Dispose(), divided by pages; ") +
            Program.Inv($"the parent holds an Alloc(populate) RW area of {Size(pages * Page)} written whole once (like the peer's, it stays write-protected after the first fork); ") +
            Program.Inv($"parts (medians, ns/page): Fork() {Report.Fmt(c.Fork.Median)}, writes {Report.Fmt(c.Writes.Median)} ({c.Writes.Spread}), child Dispose() {Report.Fmt(c.Dispose.Median)}; ") +
            Program.Inv($"per repetition {c.Copies} copy-on-write faults, each copying its fault-around window of {pages / (ulong)Math.Max(1, c.Copies)} pages (checked: every page copied once, no take-over), child mmap/mprotect calls during the writes {c.Syscalls} (one mmap per window, beside one pwritev per window into the pool), child host mappings after them {c.ChildMappings}; ") +
            Program.Inv($"breakdown: child.Space.HandlePageFault(va, Write) once per window instead of the writes (the managed resolution: the window's copies into fresh memfd frames + their mmap; no signal, no retried store) {Report.Fmt(direct.Writes.Median)} ns/page") +
            (mmapPerPage is null ? "" : Program.Inv($", of which one raw per-page mmap is {Report.Fmt(mmapPerPage.Median)} ns (map_dispatch_raw_per_page)")) +
            Program.Inv($"; verified outside the timing: every parent page unchanged, every child page the parent's with its first byte written; total {c.Total.Spread} ns");
        return new Row($"write every page after fork (COW), {Size(pages * Page)}", "ns/page", Better.Lower, "fork + child writes (fork_cow_write_kernel)",
            peer?.Median, c.Total.Median, Target.RatioAtMost(1.5), c.Total.Count, peer?.Reps, peer is null ? peers.Missing("fork_cow_write_kernel") + "; " + note : note);
    }

    /// <summary>What one copy-on-write measurement saw, in ns per page.</summary>
    /// <param name="Total">Fork + writes + child dispose.</param>
    /// <param name="Fork">The fork alone.</param>
    /// <param name="Writes">The child's writes alone.</param>
    /// <param name="Dispose">The child's dispose alone.</param>
    /// <param name="Copies">Copy-on-write faults of one repetition (each copies a window).</param>
    /// <param name="Syscalls">Host syscalls of the child during its writes.</param>
    /// <param name="ChildMappings">Host mappings of the child after its writes.</param>
    internal sealed record CowWrite(Samples Total, Samples Fork, Samples Writes, Samples Dispose, long Copies, long Syscalls, int ChildMappings);

    /// <summary>
    /// Fork, one write per page in the child, child disposed: ns per page, over <paramref name="pages"/>
    /// pages. With <paramref name="resolveOnly"/> the child makes no access: each page is resolved
    /// by calling <see cref="VmSpace.HandlePageFault(ulong, PageFaultAccess)"/> for a write.
    /// </summary>
    internal static CowWrite MeasureCowWrite(ulong pages, int warmups, int reps, bool resolveOnly = false)
    {
        ulong len = pages * Page;
        var forkNs = new List<double>();
        var writeNs = new List<double>();
        var disposeNs = new List<double>();
        long copies = 0, syscalls = 0;
        int childMappings = 0;
        return WithPool(pool =>
        {
            Samples total;
            using (var parent = new AddressSpace(new VmSpaceOptions { Size = SpaceSize, Pool = pool }))
            {
                parent.Map(len, new AreaBackend.Alloc(Populate: true), new VmMapOptions { Addr = AreaBase, Flags = PageFlags.RW });
                WriteStamped(parent, AreaBase, pages);
                total = Sampler.Run(warmups, reps,
                    reset: () => { },
                    sample: () =>
                    {
                        long t0 = Stopwatch.GetTimestamp();
                        AddressSpace child = parent.Fork();
                        long t1 = Stopwatch.GetTimestamp();
                        long t2, t3;
                        try
                        {
                            long sys0 = child.Space.HostStats.Syscalls;
                            child.Space.Activate();
                            if (resolveOnly)
                            {
                                // One call per fault-around window: the first resolves the whole window, as the write's fault does.
                                for (ulong i = 0; i < pages; i += (ulong)child.FaultAroundPages)
                                {
                                    if (!child.Space.HandlePageFault(AreaBase + i * Page, PageFaultAccess.Write))
                                        throw new InvalidOperationException($"HandlePageFault refused page {i}");
                                }
                            }
                            else
                            {
                                VmWriter<Fallible> w = child.Space.Writer(AreaBase, len);
                                for (ulong i = 0; i < pages; i++)
                                {
                                    if (!w.WriteVal(Stamp(i)).IsOk) throw new InvalidOperationException($"the child's write to page {i} failed");
                                    w.Skip(Page - 1);
                                }
                            }
                            t2 = Stopwatch.GetTimestamp();
                            syscalls = child.Space.HostStats.Syscalls - sys0;
                            copies = child.Stats.CopyOnWriteCopies;
                            long window = child.FaultAroundPages;
                            if (child.Stats.CopyOnWritePages != (long)pages || copies != (long)pages / window
                                || child.Stats.CopyOnWriteTakeovers != 0 || child.Stats.DemandZeroFaults != 0)
                                throw new InvalidOperationException($"expected {pages} pages copied by {(long)pages / window} faults and nothing else, saw {child.Stats.CopyOnWritePages} pages by {copies} faults, {child.Stats.CopyOnWriteTakeovers} take-overs, {child.Stats.DemandZeroFaults} demand-zero faults");
                            childMappings = child.Space.CountHostMappings();
                            CheckPages(parent, AreaBase, pages, "the parent after the child wrote", StampedPage);
                            CheckPages(child, AreaBase, pages, "the child after its writes", (i, page) =>
                            {
                                StampedPage(i, page);
                                if (!resolveOnly) page[0] = Stamp(i);
                            });
                        }
                        finally
                        {
                            t3 = Stopwatch.GetTimestamp();
                            child.Dispose();
                        }
                        long t4 = Stopwatch.GetTimestamp();
                        forkNs.Add(Sampler.Ns(t0, t1) / pages);
                        writeNs.Add(Sampler.Ns(t1, t2) / pages);
                        disposeNs.Add(Sampler.Ns(t3, t4) / pages);
                        return (Sampler.Ns(t0, t2) + Sampler.Ns(t3, t4)) / pages;
                    });
            }
            return new CowWrite(total, Counted(forkNs, reps), Counted(writeNs, reps), Counted(disposeNs, reps), copies, syscalls, childMappings);
        });
    }

    // ---- 4. host mappings after random copy-on-write writes ----------------------------------

    private static ulong HostMappingsBytes(Settings s) => (s.Quick ? 64UL : 1024UL) * MiB;

    private static string HostMappingsScenario(Settings s) => $"host mappings after fork + random COW writes of half of {Size(HostMappingsBytes(s))}";

    private static Row HostMappingsRow(Settings s)
    {
        ulong bytes = HostMappingsBytes(s);
        HostMappings h = MeasureHostMappings(bytes / Page, seed: 1);
        if (h.Failure is not null) throw new InvalidOperationException(Describe(h) + h.Failure);
        return new Row(HostMappingsScenario(s), "mappings", Better.Lower, "vm.max_map_count default",
            DefaultMaxMapCount, h.Max, Target.Report, 1, null,
            Describe(h) + Program.Inv($"The figure is the largest of these counts (CountHostMappings: the arena's lines of /proc/self/maps, its PROT_NONE rest included; the kernel's limit is per process, for all arenas together); UVm's own budget per space is {h.Budget}; contents verified in both spaces"));
    }

    private static string Describe(HostMappings h) =>
        Program.Inv($"parent: an Alloc(populate) RW area of {Size(h.Pages * Page)} ({h.Pages} pages) written whole; fork; the child writes one byte to a random half of the pages in random order ({h.Child.Done} of {h.Child.Wanted} writes done, {h.Child.Copies} pages copied, written ones and their windows' shared neighbours): ") +
        Program.Inv($"host mappings parent {h.Child.ParentMappings}, child {h.Child.ChildMappings}; ") +
        (h.Parent.Wanted == 0 ? "the parent's writes were skipped. "
            : Program.Inv($"then the parent writes another random half ({h.Parent.Done} of {h.Parent.Wanted} done: {h.Parent.Copies} pages copied, {h.Parent.Takeovers} taken over where the child had copied): parent {h.Parent.ParentMappings}, child {h.Parent.ChildMappings}. "));

    /// <summary>One phase of random writes and the host mapping counts after it.</summary>
    /// <param name="Wanted">Writes the phase was to make; 0 when it was skipped after an earlier failure.</param>
    /// <param name="Done">Writes that succeeded (in order; the phase stops at the first failure).</param>
    /// <param name="Copies">Pages the writing space's copy-on-write faults copied in the phase (their fault-around windows included).</param>
    /// <param name="Takeovers">Pages the writing space's copy-on-write faults took over in the phase.</param>
    /// <param name="ParentMappings">Host mappings of the parent's arena after the phase.</param>
    /// <param name="ChildMappings">Host mappings of the child's arena after the phase.</param>
    internal sealed record WritePhase(int Wanted, int Done, long Copies, long Takeovers, int ParentMappings, int ChildMappings);

    /// <summary>Host mapping counts of a parent and child after random copy-on-write writes.</summary>
    /// <param name="Pages">Pages of the area.</param>
    /// <param name="Child">The child's writes.</param>
    /// <param name="Parent">The parent's writes, after the child's.</param>
    /// <param name="Budget">UVm's budget of host mappings per space.</param>
    /// <param name="Failure">Why a write failed, or null when every write succeeded.</param>
    internal sealed record HostMappings(ulong Pages, WritePhase Child, WritePhase Parent, int Budget, string? Failure)
    {
        /// <summary>The largest count seen.</summary>
        public int Max => new[] { Child.ParentMappings, Child.ChildMappings, Parent.ParentMappings, Parent.ChildMappings }.Max();
    }

    /// <summary>
    /// Forks a written area of <paramref name="pages"/>, writes a random half in the child, then
    /// another random half in the parent, and counts both spaces' host mappings after each phase.
    /// A failed write ends its phase and is reported in <see cref="HostMappings.Failure"/>.
    /// </summary>
    internal static HostMappings MeasureHostMappings(ulong pages, int seed)
    {
        var rng = new Random(seed);
        ulong[] childPages = RandomHalf(pages, rng), parentPages = RandomHalf(pages, rng);
        string? failure = null;
        HostMappings? seen = null;
        return WithPool(pool =>
        {
            using (var parent = new AddressSpace(new VmSpaceOptions { Size = SpaceSize, Pool = pool }))
            {
                parent.Map(pages * Page, new AreaBackend.Alloc(Populate: true), new VmMapOptions { Addr = AreaBase, Flags = PageFlags.RW });
                WriteStamped(parent, AreaBase, pages);
                using AddressSpace child = parent.Fork();
                var childWrote = new bool[pages];
                var parentWrote = new bool[pages];
                WritePhase Phase(AddressSpace writer, ulong[] targets, byte value, bool[] wrote, string who)
                {
                    long copies = writer.Stats.CopyOnWritePages, takeovers = writer.Stats.CopyOnWriteTakeoverPages;
                    if (failure is not null) return new WritePhase(0, 0, 0, 0, parent.Space.CountHostMappings(), child.Space.CountHostMappings()); // skipped
                    int done = WriteBytes(writer, targets, value, wrote, who, ref failure);
                    return new WritePhase(targets.Length, done, writer.Stats.CopyOnWritePages - copies, writer.Stats.CopyOnWriteTakeoverPages - takeovers,
                        parent.Space.CountHostMappings(), child.Space.CountHostMappings());
                }
                WritePhase c = Phase(child, childPages, 1, childWrote, "child");
                WritePhase p = Phase(parent, parentPages, 2, parentWrote, "parent");
                seen = new HostMappings(pages, c, p, parent.Space.MaxHostMappings, failure);
                CheckPages(child, AreaBase, pages, "the child", (i, page) => { StampedPage(i, page); if (childWrote[i]) page[0] = 1; });
                CheckPages(parent, AreaBase, pages, "the parent", (i, page) => { StampedPage(i, page); if (parentWrote[i]) page[0] = 2; });
            }
            return seen;
        }, () => seen is null ? "" : Describe(seen) + (seen.Failure is null ? "" : seen.Failure + "; then "));
    }

    /// <summary>Half of the page numbers below <paramref name="pages"/>, in random order.</summary>
    private static ulong[] RandomHalf(ulong pages, Random rng)
    {
        var all = new ulong[pages];
        for (ulong i = 0; i < pages; i++) all[i] = i;
        rng.Shuffle(all);
        return all[..(int)(pages / 2)];
    }

    /// <summary>
    /// Writes <paramref name="value"/> at the start of each of <paramref name="pages"/> through
    /// fallible writers, marking each page done in <paramref name="wrote"/>; stops at the first
    /// failure (a fault result or an exception), described in <paramref name="failure"/>. Returns the writes done.
    /// </summary>
    private static int WriteBytes(AddressSpace space, ulong[] pages, byte value, bool[] wrote, string who, ref string? failure)
    {
        space.Space.Activate();
        int done = 0;
        foreach (ulong p in pages)
        {
            try
            {
                VmWriter<Fallible> w = space.Space.Writer(AreaBase + p * Page, 1);
                IoResult<byte> r = w.WriteVal(value);
                if (!r.IsOk)
                {
                    failure = $"the {who}'s write {done + 1} (page {p}) failed with {r.Error} at {r.Fault}, its space having {space.Space.CountHostMappings()} host mappings";
                    break;
                }
            }
            catch (UVmException e)
            {
                failure = $"the {who}'s write {done + 1} (page {p}) threw out of the fallible WriteVal: {e.Message}";
                break;
            }
            wrote[p] = true;
            done++;
        }
        return done;
    }

    // ---- contents ---------------------------------------------------------------------------



    /// <summary>Checks the first 8 bytes of every page hold its index (one fallible read per page).</summary>
    private static void CheckStamps(AddressSpace space, ulong va, ulong pages, string what)
    {
        space.Space.Activate();
        VmReader<Fallible> r = space.Space.Reader(va, pages * Page);
        for (ulong i = 0; i < pages; i++)
        {
            IoResult<ulong> v = r.ReadVal<ulong>();
            if (!v.IsOk || v.Value != i) throw new InvalidOperationException($"{what}: page {i} reads {(v.IsOk ? $"stamp {v.Value}" : v.Error.ToString())}");
            r.Skip(Page - 8);
        }
    }

    /// <summary>Reads every page back through fallible readers and compares it with what <paramref name="expected"/> builds.</summary>
    private static void CheckPages(AddressSpace space, ulong va, ulong pages, string what, PageBuilder expected)
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
                expected(first + i, want);
                if (!actual.AsSpan((int)(i * Page), (int)Page).SequenceEqual(want))
                    throw new InvalidOperationException($"{what}: page {first + i} does not hold what was written");
            }
        }
    }

    /// <summary>Builds the expected contents of page <paramref name="index"/> of an area into <paramref name="page"/>.</summary>
    private delegate void PageBuilder(ulong index, Span<byte> page);

    // ---- harness ------------------------------------------------------------------------------

    /// <summary><see cref="Scenario.WithPool"/> with a pool of <see cref="PoolSize"/> bytes.</summary>
    private static T WithPool<T>(Func<FramePool, T> run, Func<string>? context = null) => Scenario.WithPool(PoolSize, run, context);




}
