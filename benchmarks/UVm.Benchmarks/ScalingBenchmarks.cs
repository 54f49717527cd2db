using System.Diagnostics;
using System.Runtime.InteropServices;
using UVm.Frames;
using UVm.Spaces;

namespace UVm.Benchmarks;

/// <summary>
/// Two threads mapping disjoint ranges of one space against one thread mapping one range.
/// Each range lies in its own 1 GiB region (a different level-3 entry), so the cursors' guard
/// nodes differ and the lock protocol lets them run in parallel. Each thread maps its own
/// pre-allocated contiguous segment with one cursor (Map + the dispatch of its dispose, one
/// mmap). Throughput = pages mapped ÷ wall time from the common start (a spinning barrier) to
/// the last thread's end. Stopwatch harness: maps must be undone between repetitions.
/// </summary>
internal static partial class ScalingBenchmarks
{
    private const ulong Region = 1UL << 30;

    internal static IEnumerable<Row> Run(Settings s)
    {
        ulong bytes = s.Quick ? 128UL << 20 : 1UL << 30;
        (Samples one, Samples two, Samples cpuOne, Samples cpuTwo) = Measure(bytes, s.Warmups, s.Reps);
        string size = bytes >= 1UL << 30 ? $"{bytes >> 30} GiB" : $"{bytes >> 20} MiB";
        yield return new Row("2 threads mapping disjoint ranges", "pages/us", Better.Higher, "1 thread (UVm, same run)",
            one.Median, two.Median, Target.RatioAtLeast(1.7), two.Count, one.Count,
            $"each thread: one CursorMut over {size} in its own 1 GiB region (from guest 1 GiB and from 2 GiB), Map(its own {bytes / Paging.PageSize}-frame segment, RW), dispose (1 mmap); " +
            $"1 thread maps one such range; wall time from a spinning start barrier (no thread sleeps, so both start within a few ns) to the last thread's end; repetitions alternate which case runs first, ranges unmapped between; " +
            $"{Environment.ProcessorCount} CPUs; 1 thread {one.Spread}, 2 threads {two.Spread} pages/us; " +
            $"CPU time per page of each mapping thread (CLOCK_THREAD_CPUTIME_ID, median): {Report.Fmt(cpuOne.Median)} ns alone, {Report.Fmt(cpuTwo.Median)} ns beside the other " +
            "(close values mean the mapping path itself scales and a low wall-clock ratio comes from the CPUs being shared); " +
            $"managed bytes allocated per mapped page: {(double)Interlocked.Read(ref s_lastAllocatedPerThread) / (bytes / Paging.PageSize):F2}");
    }

    /// <summary>Throughput (pages/us) of one thread and of two threads, each mapping <paramref name="bytes"/>.</summary>
    internal static (Samples One, Samples Two, Samples CpuOne, Samples CpuTwo) Measure(ulong bytes, int warmups, int reps)
    {
        ulong pages = bytes / Paging.PageSize;
        using var pool = new FramePool(2 * bytes + Paging.HugePageSize);
        using var space = new VmSpace(new VmSpaceOptions { Size = 4 * Region, Pool = pool });
        if (bytes > Region) throw new ArgumentOutOfRangeException(nameof(bytes), "each range must fit its own 1 GiB region");
        using USegment a = pool.AllocSegment(pages), b = pool.AllocSegment(pages);
        var ranges = new[] { VaddrRange.FromLength(Region, bytes), VaddrRange.FromLength(2 * Region, bytes) };
        var segments = new[] { a, b };

        var one = new List<double>();
        var two = new List<double>();
        var cpuOne = new List<double>();
        var cpuTwo = new List<double>();
        for (int i = 0; i < warmups + reps; i++)
        {
            double t1 = 0, t2 = 0, c1 = 0, c2 = 0;
            foreach (int threads in i % 2 == 0 ? new[] { 1, 2 } : new[] { 2, 1 })
            {
                GC.Collect();
                GC.WaitForPendingFinalizers();
                GC.Collect();
                (double ns, double cpuNs) = MapInParallel(space, ranges.AsSpan(0, threads).ToArray(), segments.AsSpan(0, threads).ToArray());
                for (int t = 0; t < threads; t++)
                {
                    using CursorMut c = space.CursorMut(ranges[t]);
                    if (c.Unmap(bytes) != pages) throw new InvalidOperationException("the map did not map every page");
                }
                if (threads == 1) (t1, c1) = (ns, cpuNs); else (t2, c2) = (ns, cpuNs);
            }
            if (i < warmups)
            {
                Thread.Sleep(Jit.TierUpPauseMs); // let the map path reach tier 1 before counting
                continue;
            }
            one.Add(pages / (t1 / 1000));
            two.Add(2 * pages / (t2 / 1000));
            cpuOne.Add(c1 / pages);
            cpuTwo.Add(c2 / pages);
        }
        return (new Samples(one), new Samples(two), new Samples(cpuOne), new Samples(cpuTwo));
    }

    /// <summary>Each range mapped by its own thread; wall ns from the common start to the last end, and the mean CPU ns per thread.</summary>
    private static (double WallNs, double CpuNs) MapInParallel(VmSpace space, VaddrRange[] ranges, USegment[] segments)
    {
        int n = ranges.Length;
        var start = new long[n];
        var end = new long[n];
        var cpu = new long[n];
        var allocated = new long[n];
        var errors = new Exception?[n];
        int ready = 0;
        var threads = new Thread[n];
        for (int t = 0; t < n; t++)
        {
            int me = t;
            threads[t] = new Thread(() =>
            {
                try
                {
                    // Spin, never sleep: a sleeping thread's wake-up takes milliseconds on a busy VM.
                    Interlocked.Increment(ref ready);
                    while (Volatile.Read(ref ready) < n) Thread.SpinWait(1);
                    start[me] = Stopwatch.GetTimestamp();
                    long cpu0 = ThreadCpuNs(), bytes0 = GC.GetAllocatedBytesForCurrentThread();
                    using (CursorMut c = space.CursorMut(ranges[me])) c.Map(segments[me], PageProperty.New(PageFlags.RW));
                    cpu[me] = ThreadCpuNs() - cpu0;
                    allocated[me] = GC.GetAllocatedBytesForCurrentThread() - bytes0;
                    end[me] = Stopwatch.GetTimestamp();
                }
                catch (Exception e)
                {
                    errors[me] = e;
                }
            });
            threads[t].Start();
        }
        foreach (Thread th in threads) th.Join();
        if (errors.FirstOrDefault(e => e != null) is { } err) throw new InvalidOperationException("a mapping thread failed", err);
        Interlocked.Exchange(ref s_lastAllocatedPerThread, (long)allocated.Average());
        return (Sampler.Ns(start.Min(), end.Max()), cpu.Average());
    }

    private static long s_lastAllocatedPerThread;

    private const int CLOCK_THREAD_CPUTIME_ID = 3;

    [StructLayout(LayoutKind.Sequential)]
    private struct Timespec
    {
        public long Sec;
        public long Nsec;
    }

    [LibraryImport("libc", EntryPoint = "clock_gettime")]
    private static partial int ClockGettime(int clock, out Timespec ts);

    /// <summary>CPU time the calling thread has used, in ns.</summary>
    private static long ThreadCpuNs() =>
        ClockGettime(CLOCK_THREAD_CPUTIME_ID, out Timespec ts) == 0 ? ts.Sec * 1_000_000_000 + ts.Nsec : throw new InvalidOperationException("clock_gettime failed");
}
