using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Running;
using UVm.Frames;
using UVm.Io;
using UVm.Spaces;

namespace UVm.Benchmarks;

/// <summary>
/// Fallible copy of resident guest memory into a managed buffer,
/// <c>space.Reader(va, size).ReadFallible(span)</c> (reader creation and its checks included),
/// against <see cref="Buffer.MemoryCopy"/> of the same host bytes into the same buffer, in
/// the same process. The source is 1 MiB of frames mapped RW and touched in setup, so
/// no copy faults.
/// </summary>
public unsafe class CopyBenchmarks
{
    private const ulong Va = 1UL << 30;
    private const int MaxSize = 1 << 20;

    private FramePool _pool = null!;
    private VmSpace _space = null!;
    private USegment _segment = null!;
    private byte[] _dst = null!;
    private byte* _dstPtr;
    private byte* _src;

    /// <summary>Bytes per copy.</summary>
    [Params(4096, 65536, 1048576)]
    public int Size;

    [GlobalSetup]
    public void Setup()
    {
        _pool = new FramePool(4UL << 20);
        _space = new VmSpace(new VmSpaceOptions { Size = 2UL << 30, Pool = _pool });
        _segment = _pool.AllocSegment(MaxSize / Paging.PageSize);
        using (CursorMut c = _space.CursorMut(VaddrRange.FromLength(Va, MaxSize))) c.Map(_segment, PageProperty.New(PageFlags.RW));
        _src = (byte*)(_space.HostBase + (nint)Va);
        // Make every source page resident on the host (first touches are not what is measured).
        for (int i = 0; i < MaxSize; i++) _src[i] = (byte)i;
        _dst = GC.AllocateArray<byte>(MaxSize, pinned: true);
        _dst.AsSpan().Fill(1);
        // SAFETY: the array is allocated on the pinned heap; it never moves.
        fixed (byte* p = _dst) _dstPtr = p;
        // BenchmarkDotNet's in-process executor runs setup and workload on one thread.
        _space.Activate();
        Jit.Settle(MemoryCopy, () => Fallible());
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        VmSpace.Deactivate();
        _segment.Dispose();
        _space.Dispose();
        _pool.Dispose();
    }

    [Benchmark(Baseline = true)]
    public void MemoryCopy() => Buffer.MemoryCopy(_src, _dstPtr, MaxSize, Size);

    [Benchmark]
    public ulong Fallible()
    {
        VmReader<Fallible> reader = _space.Reader(Va, (ulong)Size);
        CopyResult r = reader.ReadFallible(_dst.AsSpan(0, Size));
        if (!r.IsOk) throw new InvalidOperationException($"resident copy faulted after {r.Bytes} bytes");
        return r.Bytes;
    }

    internal static IEnumerable<Row> Run(Settings s, PeerResults peers)
    {
        var summary = BenchmarkRunner.Run<CopyBenchmarks>(Program.Config(s, oneShot: false));
        foreach (int size in new[] { 4096, 65536, 1048576 })
        {
            bool Of(BenchmarkCase c) => (int)c.Parameters["Size"] == size;
            (double baseNs, int baseN) = Program.Median(summary, nameof(MemoryCopy), Of);
            (double uvmNs, int uvmN) = Program.Median(summary, nameof(Fallible), Of);
            double baseGbps = size / baseNs, uvmGbps = size / uvmNs;   // bytes per ns = GB/s (1e9 bytes/s)
            string label = size >= 1 << 20 ? $"{size >> 20} MiB" : $"{size >> 10} KiB";
            yield return new Row($"fallible copy, resident, {label}", "GB/s", Better.Higher, "Buffer.MemoryCopy (same process)",
                baseGbps, uvmGbps, Target.RatioAtLeast(0.9), uvmN, baseN,
                Program.Inv($"space.Reader(va, {size}).ReadFallible(span) per operation (reader creation and checks included) vs Buffer.MemoryCopy of the same guest bytes into the same pinned buffer; BenchmarkDotNet medians {Report.Fmt(uvmNs)} ns vs {Report.Fmt(baseNs)} ns per copy"));
            PeerFigure? memcpy = peers.Get($"copy_memcpy_{size}", "GB_per_s");
            yield return new Row($"fallible copy, resident, {label}", "GB/s", Better.Higher, $"C memcpy (copy_memcpy_{size})",
                memcpy?.Median, uvmGbps, Target.Report, uvmN, memcpy?.Reps,
                memcpy is null ? peers.Missing($"copy_memcpy_{size}") : "reference only: the peer copies between two malloc buffers of its own process in a tight loop");
        }
    }
}
