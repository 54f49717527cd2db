using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;

namespace UVm.Benchmarks;

/// <summary>
/// <c>UVm.Benchmarks [--quick] [suite ...]</c>: runs the BenchmarkDotNet suites (UVm and its
/// peer in the same run, the peer as baseline so BenchmarkDotNet prints the ratio), then one
/// table a person can read: scenario, peer, UVm, ratio, target.
/// </summary>
public static class Program
{
    public static int Main(string[] args)
    {
        bool quick = args.Contains("--quick");
        var suites = args.Where(a => !a.StartsWith("--")).ToHashSet();
        bool all = suites.Count == 0;
        var rows = new List<Row>();
        if (all || suites.Contains("map")) rows.AddRange(MapBenchmarks.Run(Config(quick), quick));
        Row.Print(rows, quick);
        return 0;
    }

    internal static IConfig Config(bool quick) =>
        ManualConfig.CreateMinimumViable()
            .AddJob(Job.Default
                .WithToolchain(InProcessEmitToolchain.Instance)
                .WithWarmupCount(quick ? 1 : 3)
                .WithIterationCount(quick ? 3 : 15)
                .WithInvocationCount(1)
                .WithUnrollFactor(1))
            .AddColumn(BenchmarkDotNet.Columns.StatisticColumn.Median)
            .WithOptions(ConfigOptions.DisableLogFile | ConfigOptions.JoinSummary);

    internal static double MedianNs(Summary summary, string method) =>
        summary.Reports.First(r => r.BenchmarkCase.Descriptor.WorkloadMethod.Name == method).ResultStatistics!.Median;
}

/// <summary>One line of the final table.</summary>
internal sealed record Row(string Scenario, string Unit, double Peer, double Uvm, string PeerName, string Target, bool? Met, string Note = "")
{
    public double Ratio => Uvm / Peer;

    public static void Print(IReadOnlyList<Row> rows, bool quick)
    {
        Console.WriteLine();
        Console.WriteLine($"UVm beside its peers ({(quick ? "quick" : "full")} run; medians of BenchmarkDotNet iterations)");
        Console.WriteLine($"| {"scenario",-34} | {"unit",-10} | {"peer",-26} | {"peer",10} | {"UVm",10} | {"UVm/peer",8} | {"target",-22} | met |");
        Console.WriteLine($"|{new string('-', 36)}|{new string('-', 12)}|{new string('-', 28)}|{new string('-', 12)}|{new string('-', 12)}|{new string('-', 10)}|{new string('-', 24)}|-----|");
        foreach (Row r in rows)
            Console.WriteLine($"| {r.Scenario,-34} | {r.Unit,-10} | {r.PeerName,-26} | {Fmt(r.Peer),10} | {Fmt(r.Uvm),10} | {r.Ratio,8:F2} | {r.Target,-22} | {(r.Met is null ? "-" : r.Met.Value ? "yes" : "NO"),-3} |");
        foreach (Row r in rows.Where(r => r.Note.Length > 0)) Console.WriteLine($"  {r.Scenario}: {r.Note}");
    }

    private static string Fmt(double v) => v >= 100 ? v.ToString("F1") : v >= 1 ? v.ToString("F2") : v.ToString("G3");
}
