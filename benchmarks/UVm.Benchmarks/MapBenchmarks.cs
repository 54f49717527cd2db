using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Running;
using UVm.Frames;
using UVm.Host;
using UVm.Spaces;
using UVm.Interop;

namespace UVm.Benchmarks;

/// <summary>
/// Map 1 GiB (262,144 pages; 64 MiB in a quick run, the C peer's size) of one contiguous
/// segment through one cursor and dispatch; then unmap it. The in-process peer is the
/// host-syscall floor: raw <c>mmap(MAP_SHARED|MAP_FIXED)</c> of the same run of a memfd, and raw
/// <c>mmap</c> back to <c>PROT_NONE</c>; the table also sets UVm against the C peer
/// <c>map_dispatch_raw</c> (the same single <c>mmap</c>, from C).
/// </summary>
public class MapBenchmarks
{
    /// <summary>Bytes mapped per operation; set before the suite runs (BenchmarkDotNet runs in process).</summary>
    internal static ulong Bytes = 1UL << 30;
    private static nuint ArenaBytes => unchecked((nuint)(4 * Bytes));
    internal static ulong Pages => Bytes / Paging.PageSize;
    internal static ulong Va => Bytes;

    private FramePool _pool = null!;
    private VmSpace _space = null!;
    private USegment _segment = null!;
    private nint _rawArena;
    private int _rawFd;

    [GlobalSetup(Targets = [nameof(RawMap), nameof(RawUnmap)])]
    public void Setup()
    {
        _pool = new FramePool(2 * Bytes);
        _space = new VmSpace(new VmSpaceOptions { Size = 4 * Bytes, Pool = _pool });
        _segment = _pool.AllocSegment(Pages);
        _rawFd = Libc.MemfdCreate("uvm-bench-raw", Libc.MFD_CLOEXEC);
        HostCall.Check(Libc.Ftruncate(_rawFd, (long)Bytes), "ftruncate");
        _rawArena = HostCall.CheckMap(Libc.Mmap(0, ArenaBytes, Libc.PROT_NONE,
            Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_NORESERVE, -1, 0), "mmap");
    }

    /// <summary>Setup for the UVm cases: also drives the map and unmap paths to tier 1 on a 2 MiB slice.</summary>
    [GlobalSetup(Targets = [nameof(UvmMap), nameof(UvmUnmap)])]
    public void SetupUvm()
    {
        Setup();
        using USegment small = _pool.AllocSegment(FramePool.ChunkFrames);
        var range = VaddrRange.FromLength(Va, small.Size);
        Jit.Settle(() =>
        {
            using (CursorMut c = _space.CursorMut(range)) c.Map(small, PageProperty.New(PageFlags.RW));
            using (CursorMut c = _space.CursorMut(range)) c.Unmap(small.Size);
        });
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _segment.Dispose();
        _space.Dispose();
        _pool.Dispose();
        Libc.Munmap(_rawArena, ArenaBytes);
        Libc.Close(_rawFd);
    }

    [Benchmark(Baseline = true, Description = "raw mmap of the run")]
    public void RawMap() => RawMapOnce();

    [IterationCleanup(Target = nameof(RawMap))]
    public void RawMapCleanup() => RawUnmapOnce();

    [Benchmark(Description = "UVm map+dispatch")]
    public void UvmMap() => UvmMapOnce();

    [IterationCleanup(Target = nameof(UvmMap))]
    public void UvmMapCleanup() => UvmUnmapOnce();

    [IterationSetup(Target = nameof(RawUnmap))]
    public void RawUnmapSetup() => RawMapOnce();

    [Benchmark(Description = "raw unmap of the run")]
    public void RawUnmap() => RawUnmapOnce();

    [IterationSetup(Target = nameof(UvmUnmap))]
    public void UvmUnmapSetup() => UvmMapOnce();

    [Benchmark(Description = "UVm unmap")]
    public void UvmUnmap() => UvmUnmapOnce();

    private void RawMapOnce() => HostCall.CheckMap(Libc.Mmap(_rawArena + (nint)Va, (nuint)Bytes,
        Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED | Libc.MAP_FIXED, _rawFd, 0), "mmap");

    private void RawUnmapOnce() => HostCall.CheckMap(Libc.Mmap(_rawArena + (nint)Va, (nuint)Bytes, Libc.PROT_NONE,
        Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_FIXED | Libc.MAP_NORESERVE, -1, 0), "mmap");

    private void UvmMapOnce()
    {
        using CursorMut cursor = _space.CursorMut(VaddrRange.FromLength(Va, Bytes));
        cursor.Map(_segment, PageProperty.New(PageFlags.RW));
        cursor.Flusher.DispatchTlbFlush();
    }

    private void UvmUnmapOnce()
    {
        using CursorMut cursor = _space.CursorMut(VaddrRange.FromLength(Va, Bytes));
        cursor.Unmap(Bytes);
    }

    /// <summary>Runs the suite and turns it into table rows, with the syscall and memory figures of one extra pass.</summary>
    internal static IEnumerable<Row> Run(Settings s, PeerResults peers)
    {
        PeerFigure? floor = peers.Get("map_dispatch_raw", "ns_per_page");
        Bytes = (ulong)(floor?.Number("pages") ?? (s.Quick ? 16384 : 262144)) * Paging.PageSize;
        string size = Bytes >= 1UL << 30 ? $"{Bytes >> 30} GiB" : $"{Bytes >> 20} MiB";

        var summary = BenchmarkRunner.Run<MapBenchmarks>(Program.Config(s, oneShot: true));
        (double rawMap, int rawMapN) = Program.Median(summary, nameof(RawMap));
        (double uvmMap, int uvmMapN) = Program.Median(summary, nameof(UvmMap));
        (double rawUnmap, int rawUnmapN) = Program.Median(summary, nameof(RawUnmap));
        (double uvmUnmap, int uvmUnmapN) = Program.Median(summary, nameof(UvmUnmap));

        // One measured pass for the counts: syscalls of map+dispatch and unmap, page-table bytes per page.
        var b = new MapBenchmarks();
        b.Setup();
        long before = b._space.HostStats.Syscalls;
        b.UvmMapOnce();
        long mapSyscalls = b._space.HostStats.Syscalls - before;
        double ptBytesPerPage = (double)b._space.PageTableBytes / Pages;
        before = b._space.HostStats.Syscalls;
        b.UvmUnmapOnce();
        long unmapSyscalls = b._space.HostStats.Syscalls - before;
        b.Cleanup();

        double perPage = uvmMap / Pages;
        string counts = $"{mapSyscalls} host syscall(s) for the whole map (one contiguous run), page table {ptBytesPerPage:F2} bytes per mapped page";
        yield return new Row($"map + dispatch {size} contiguous", "ns/page", Better.Lower, "C raw mmap of the run (map_dispatch_raw)",
            floor?.Median, perPage, Target.Custom("report; <= 1 syscall per run", mapSyscalls <= 1), uvmMapN, floor?.Reps,
            Program.Inv($"one CursorMut over the range, Map(segment of {Pages} frames, RW), DispatchTlbFlush, timed by BenchmarkDotNet once per iteration (unmapped in iteration cleanup); {counts}; in-process raw mmap of the same run {Report.Fmt(rawMap / Pages)} ns/page ({rawMapN} iterations)")
            + (floor is null ? "; " + peers.Missing("map_dispatch_raw") : ""));
        yield return new Row($"unmap {size} contiguous", "ns/page", Better.Lower, "raw mmap to PROT_NONE (same process)",
            rawUnmap / Pages, uvmUnmap / Pages, Target.Report, uvmUnmapN, rawUnmapN,
            $"one CursorMut over the range, Unmap({size}) (dispatches, frames released); {unmapSyscalls} host syscall(s) for the whole unmap");
    }
}
