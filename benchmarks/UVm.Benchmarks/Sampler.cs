using System.Diagnostics;

namespace UVm.Benchmarks;

/// <summary>The counted samples of a Stopwatch scenario.</summary>
internal sealed record Samples(IReadOnlyList<double> Values)
{
    public int Count => Values.Count;
    public double Median
    {
        get
        {
            double[] v = Values.Order().ToArray();
            return v.Length % 2 == 1 ? v[v.Length / 2] : (v[v.Length / 2 - 1] + v[v.Length / 2]) / 2;
        }
    }
    public double Min => Values.Min();
    public double Max => Values.Max();

    /// <summary>"min 1.2 .. max 3.4" for a note.</summary>
    public string Spread => $"samples {Report.Fmt(Min)}..{Report.Fmt(Max)}";
}

/// <summary>
/// The Stopwatch harness for scenarios BenchmarkDotNet handles badly (each repetition consumes
/// state: faults resolve once, maps must be undone): an untimed reset, then a sample the
/// scenario times itself, repeated; the first <c>warmups</c> samples are thrown away.
/// </summary>
internal static class Sampler
{
    /// <summary>Runs <paramref name="reset"/> then <paramref name="sample"/> <c>warmups + reps</c> times; returns the counted samples.</summary>
    public static Samples Run(int warmups, int reps, Action reset, Func<double> sample)
    {
        var values = new List<double>(reps);
        for (int i = 0; i < warmups + reps; i++)
        {
            reset();
            // Start every repetition from the same heap: garbage of the previous one is not billed to this one.
            GC.Collect();
            GC.WaitForPendingFinalizers();
            GC.Collect();
            double v = sample();
            if (i >= warmups) values.Add(v);
            else Thread.Sleep(Jit.TierUpPauseMs); // let code that got hot in the warm-up be recompiled at tier 1 before counting
        }
        return new Samples(values);
    }

    /// <summary>Nanoseconds between two <see cref="Stopwatch.GetTimestamp"/> values.</summary>
    public static double Ns(long from, long to) => (to - from) * 1e9 / Stopwatch.Frequency;
}

/// <summary>Gets code to its final (tier-1) form before it is measured.</summary>
internal static class Jit
{
    /// <summary>
    /// Calls each workload often enough to be counted for tier-1 recompilation, then gives the
    /// runtime's background compiler time (its call-counting delay is 100 ms after the last new
    /// tier-0 method) — five times: tier 0, instrumented tier 0 and tier 1 each need their own round of calls. Without this a
    /// short in-process BenchmarkDotNet run can measure tier-0 code (seen: ReadVal 19 ns in
    /// tier 0 against 8 ns in tier 1).
    /// </summary>
    /// <summary>A pause long enough for the runtime's call-counting delay (100 ms) and a background tier-1 compile.</summary>
    public const int TierUpPauseMs = 150;

    public static void Settle(params Action[] workloads)
    {
        for (int round = 0; round < 5; round++)
        {
            foreach (Action w in workloads)
                for (int i = 0; i < 200; i++) w();
            Thread.Sleep(TierUpPauseMs);
        }
    }
}
