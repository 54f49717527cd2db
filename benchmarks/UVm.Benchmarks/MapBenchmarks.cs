using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Running;
using UVm.Frames;
using UVm.Host;
using UVm.Spaces;

namespace UVm.Benchmarks;

/// <summary>
/// Map 1 GiB (262,144 pages) of one contiguous segment through one cursor and dispatch; then
/// unmap it. The peer is the host-syscall floor: raw <c>mmap(MAP_SHARED|MAP_FIXED)</c> of the
/// same run of a memfd, and raw <c>mmap</c> back to <c>PROT_NONE</c>.
/// </summary>
public class MapBenchmarks
{
    internal const ulong Bytes = 1UL << 30;
    private static readonly nuint ArenaBytes = unchecked((nuint)(4 * Bytes));
    internal const ulong Pages = Bytes / Paging.PageSize;
    internal const ulong Va = 1UL << 30;

    private FramePool _pool = null!;
    private VmSpace _space = null!;
    private USegment _segment = null!;
    private nint _rawArena;
    private int _rawFd;

    [GlobalSetup]
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

    [GlobalCleanup]
    public void Cleanup()
    {
        _segment.Dispose();
        _space.Dispose();
        _pool.Dispose();
        Libc.Munmap(_rawArena, ArenaBytes);
        Libc.Close(_rawFd);
    }

    [Benchmark(Baseline = true, Description = "raw mmap 1 GiB")]
    public void RawMap() => RawMapOnce();

    [IterationCleanup(Target = nameof(RawMap))]
    public void RawMapCleanup() => RawUnmapOnce();

    [Benchmark(Description = "UVm map+dispatch 1 GiB")]
    public void UvmMap() => UvmMapOnce();

    [IterationCleanup(Target = nameof(UvmMap))]
    public void UvmMapCleanup() => UvmUnmapOnce();

    [IterationSetup(Target = nameof(RawUnmap))]
    public void RawUnmapSetup() => RawMapOnce();

    [Benchmark(Description = "raw unmap 1 GiB")]
    public void RawUnmap() => RawUnmapOnce();

    [IterationSetup(Target = nameof(UvmUnmap))]
    public void UvmUnmapSetup() => UvmMapOnce();

    [Benchmark(Description = "UVm unmap 1 GiB")]
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
    internal static IEnumerable<Row> Run(IConfig config, bool quick)
    {
        var summary = BenchmarkRunner.Run<MapBenchmarks>(config);
        double rawMap = Program.MedianNs(summary, nameof(RawMap)), uvmMap = Program.MedianNs(summary, nameof(UvmMap));
        double rawUnmap = Program.MedianNs(summary, nameof(RawUnmap)), uvmUnmap = Program.MedianNs(summary, nameof(UvmUnmap));

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
        yield return new Row("map+dispatch 1 GiB contiguous", "ns/page", rawMap / Pages, perPage, "raw mmap of the same run",
            "<= 150 ns/page", perPage <= 150, $"{mapSyscalls} host syscall(s) for the whole map (target <= 4); page table {ptBytesPerPage:F2} bytes per mapped page (target <= 10)");
        yield return new Row("unmap 1 GiB contiguous", "ns/page", rawUnmap / Pages, uvmUnmap / Pages, "raw mmap to PROT_NONE",
            "report", null, $"{unmapSyscalls} host syscall(s) for the whole unmap");
    }
}
