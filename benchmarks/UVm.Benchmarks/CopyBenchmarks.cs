using System.Diagnostics;
using System.Runtime.InteropServices;
using UVm.Frames;
using UVm.Io;
using UVm.Spaces;

namespace UVm.Benchmarks;

/// <summary>
/// Fallible copy of resident guest memory into a buffer,
/// <c>space.Reader(va, size).ReadFallible(span)</c> (reader creation and its checks included),
/// against <see cref="Buffer.MemoryCopy"/> of the same host bytes into the same buffer, in the
/// same process. The source is 1 MiB of frames mapped RW and touched in setup, so no copy faults.
/// </summary>
/// <remarks>
/// Paired, not two separate runs: each sample times a batch of baseline copies and a batch of
/// UVm copies back to back (which one goes first alternates), so both see the same machine. On
/// this shared VM the speed of a copy drifts by ±20 % between runs of a few hundred
/// milliseconds, more than the difference being measured; separate runs (BenchmarkDotNet's
/// way: all iterations of one method, then the other) flipped the verdict from run to run.
/// </remarks>
internal static unsafe class CopyBenchmarks
{
    private const ulong Va = 1UL << 30;
    private const int MaxSize = 1 << 20;
    private static readonly int[] Sizes = [4096, 65536, 1048576];

    internal static IEnumerable<Row> Run(Settings s, PeerResults peers)
    {
        var rows = new List<Row>();
        using var pool = new FramePool(4UL << 20);
        using var space = new VmSpace(new VmSpaceOptions { Size = 2UL << 30, Pool = pool });
        using USegment segment = pool.AllocSegment(MaxSize / Paging.PageSize);
        using (CursorMut c = space.CursorMut(VaddrRange.FromLength(Va, MaxSize))) c.Map(segment, PageProperty.New(PageFlags.RW));
        byte* src = (byte*)(space.HostBase + (nint)Va);
        // SAFETY: the range was just mapped RW and dispatched; these are the setup's first touches.
        for (int i = 0; i < MaxSize; i++) src[i] = (byte)i;
        // A page-aligned destination: at some alignments (a GC array's data lies 48 bytes past a
        // 64-byte boundary) glibc's memmove on this CPU copies 4 KiB at ~2 GB/s, which would make
        // the baseline meaningless. Both sides copy into the same buffer.
        byte* dst = (byte*)NativeMemory.AlignedAlloc(MaxSize, 4096);
        try
        {
            new Span<byte>(dst, MaxSize).Fill(1);
            space.Activate();
            foreach (int size in Sizes) rows.AddRange(Measure(s, peers, space, src, dst, size));
        }
        finally
        {
            VmSpace.Deactivate();
            NativeMemory.AlignedFree(dst);
        }
        using (CursorMut c = space.CursorMut(VaddrRange.FromLength(Va, MaxSize))) c.Unmap(MaxSize);
        return rows;
    }

    private static Row[] Measure(Settings s, PeerResults peers, VmSpace space, byte* src, byte* dst, int size)
    {
        int batch = Math.Max(4, (s.Quick ? 4 << 20 : 16 << 20) / size); // 4 or 16 MiB copied per timed batch
        int pairs = s.Quick ? 15 : 41;
        void Baseline() { for (int i = 0; i < batch; i++) Buffer.MemoryCopy(src, dst, MaxSize, size); }
        void Uvm()
        {
            for (int i = 0; i < batch; i++)
            {
                VmReader<Fallible> reader = space.Reader(Va, (ulong)size);
                CopyResult r = reader.ReadFallible(new Span<byte>(dst, size));
                if (!r.IsOk) throw new InvalidOperationException($"resident copy faulted after {r.Bytes} bytes");
            }
        }
        Jit.Settle(Baseline, Uvm);
        var baseNs = new List<double>(pairs);
        var uvmNs = new List<double>(pairs);
        var ratios = new List<double>(pairs);
        for (int k = 0; k < pairs; k++)
        {
            double b, u;
            if (k % 2 == 0) { b = Time(Baseline); u = Time(Uvm); }
            else { u = Time(Uvm); b = Time(Baseline); }
            baseNs.Add(b / batch);
            uvmNs.Add(u / batch);
            ratios.Add(b / u); // UVm's throughput over the baseline's, this pair
        }
        var baseS = new Samples(baseNs);
        var uvmS = new Samples(uvmNs);
        double baseGbps = size / baseS.Median, uvmGbps = size / uvmS.Median; // bytes per ns = GB/s (1e9 bytes/s)
        var ratio = new Samples(ratios);
        string label = size >= 1 << 20 ? $"{size >> 20} MiB" : $"{size >> 10} KiB";
        var vsBaseline = new Row($"fallible copy, resident, {label}", "GB/s", Better.Higher, "Buffer.MemoryCopy (same process)",
            baseGbps, uvmGbps, Target.RatioAtLeast(0.9), pairs, pairs,
            Program.Inv($"space.Reader(va, {size}).ReadFallible(span) per copy (reader creation and checks included) vs Buffer.MemoryCopy of the same guest bytes into the same page-aligned buffer; {pairs} pairs of back-to-back batches of {batch} copies, order alternating; medians {Report.Fmt(uvmS.Median)} ns vs {Report.Fmt(baseS.Median)} ns per copy; UVm/baseline throughput per pair: median {Report.Fmt(ratio.Median)}, {ratio.Spread}"));
        PeerFigure? memcpy = peers.Get($"copy_memcpy_{size}", "GB_per_s");
        var vsMemcpy = new Row($"fallible copy, resident, {label}", "GB/s", Better.Higher, $"C memcpy (copy_memcpy_{size})",
            memcpy?.Median, uvmGbps, Target.Report, pairs, memcpy?.Reps,
            memcpy is null ? peers.Missing($"copy_memcpy_{size}") : "reference only: the peer copies between two malloc buffers of its own process in a tight loop");
        return [vsBaseline, vsMemcpy];
    }

    private static double Time(Action work)
    {
        long t0 = Stopwatch.GetTimestamp();
        work();
        return Sampler.Ns(t0, Stopwatch.GetTimestamp());
    }
}
