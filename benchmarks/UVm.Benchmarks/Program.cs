using System.Globalization;
using System.Runtime.InteropServices;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Loggers;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Toolchains.InProcess.Emit;
using Perfolizer.Horology;
using Perfolizer.Mathematics.OutlierDetection;

namespace UVm.Benchmarks;

/// <summary>
/// <c>UVm.Benchmarks [--quick] [--peers FILE] [--results DIR] [suite ...]</c> runs UVm's
/// scenarios and prints one table beside the C peers' figures of the same run (the PEER lines
/// of <c>benchmarks/peers/run.sh</c>, in FILE): scenario, unit, peer, UVm, UVm ÷ peer, target,
/// met, repetitions. Writes <c>latest.md</c> and <c>latest.json</c> into DIR (default
/// <c>benchmarks/results</c> of the repository). Suites: fault, areas, copy, readval, map, scaling, snapshot.
/// <c>UVm.Benchmarks --smoke</c> checks the harness itself (see <see cref="Smoke"/>).
/// </summary>
public static class Program
{
    internal static readonly string[] Suites = ["fault", "areas", "copy", "readval", "map", "scaling", "snapshot"];

    public static int Main(string[] args)
    {
        Settings s;
        try
        {
            s = Settings.Parse(args);
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine($"UVm.Benchmarks: {e.Message}");
            Console.Error.WriteLine("usage: UVm.Benchmarks [--quick] [--smoke] [--peers FILE] [--results DIR] [" + string.Join(" | ", Suites) + "]...");
            return 2;
        }
        PeerResults peers;
        try
        {
            peers = s.PeersFile is null ? PeerResults.Empty : PeerResults.Load(s.PeersFile);
        }
        catch (Exception e) when (e is IOException or FormatException or UnauthorizedAccessException)
        {
            Console.Error.WriteLine($"UVm.Benchmarks: cannot read the peers' figures: {e.Message}");
            return 2;
        }
        if (s.Smoke) return Smoke.Run(s, peers);

        var started = DateTime.UtcNow;
        string loadBefore = LoadAverage();
        var rows = new List<Row>();
        foreach (string suite in Suites.Where(s.Wants))
        {
            Console.WriteLine($"== UVm suite '{suite}'");
            try
            {
                rows.AddRange(suite switch
                {
                    "fault" => FaultBenchmarks.Run(s, peers),
                    "areas" => AreaBenchmarks.Run(s, peers),
                    "copy" => CopyBenchmarks.Run(s, peers),
                    "readval" => ReadValBenchmarks.Run(s),
                    "map" => MapBenchmarks.Run(s, peers),
                    "scaling" => ScalingBenchmarks.Run(s),
                    "snapshot" => SnapshotBenchmarks.Run(s, peers),
                    _ => throw new InvalidOperationException(suite),
                });
            }
            catch (Exception e)
            {
                Console.Error.WriteLine($"UVm.Benchmarks: suite '{suite}' failed: {e}");
                rows.Add(Row.Failed($"suite '{suite}'", e));
            }
        }

        var report = new Report(rows, Heading(s, peers, started, loadBefore, LoadAverage()));
        Console.WriteLine();
        Console.Write(report.Markdown());
        report.Write(s.ResultsDir);
        Console.WriteLine($"\nwritten: {Path.Combine(s.ResultsDir, "latest.md")}, {Path.Combine(s.ResultsDir, "latest.json")}");
        return rows.Any(r => r.Met == "ERROR") ? 1 : 0;
    }

    /// <summary>The 1-minute load average, so a reader can tell a quiet machine from a busy one.</summary>
    private static string LoadAverage() =>
        File.Exists("/proc/loadavg") ? File.ReadAllText("/proc/loadavg").Split(' ')[0] : "?";

    private static string Heading(Settings s, PeerResults peers, DateTime started, string loadBefore, string loadAfter)
    {
        string kernel = File.Exists("/proc/sys/kernel/osrelease") ? File.ReadAllText("/proc/sys/kernel/osrelease").Trim() : "?";
        return string.Join("\n",
            $"{(s.Quick ? "Quick" : "Full")} run, {started:yyyy-MM-dd HH:mm} UTC, Linux {kernel}, {Environment.ProcessorCount} CPUs " +
            $"(1-minute load average {loadBefore} when UVm's scenarios started, {loadAfter} when they ended), " +
            $"{RuntimeInformation.FrameworkDescription}; peers ({peers.Count} figures, from {Path.GetFileName(peers.Source)}) and UVm measured in this one run.",
            "",
            $"Every figure is a median. \"reps UVm/peer\" says of how many repetitions: UVm's Stopwatch scenarios (faults, areas, 2 threads) " +
            $"take {s.Reps} after {s.Warmups} uncounted warm-ups (each followed by a pause so hot code reaches tier 1); the copy scenarios time UVm and Buffer.MemoryCopy " +
            $"in alternating back-to-back pairs of batches (the reps are pairs); its BenchmarkDotNet scenarios (ReadVal, map) take the median of " +
            $"their measured iterations (in-process toolchain, workloads driven to tier 1 in setup, {s.BdnWarmups} warm-up iterations); every peer takes its reps after one uncounted warm-up.",
            "UVm÷peer is UVm's figure divided by the peer's: for times (ns, us) lower is better, for throughputs (GB/s, pages/us) higher is better; " +
            "the target column says which. \"met\": yes / NO against the target; \"report\" = no target, read the figure; \"no peer\" = the peer gave no figure; ERROR = the scenario failed (see its note).");
    }

    /// <summary>The BenchmarkDotNet configuration: in-process, few iterations, progress lines only on the console.</summary>
    /// <param name="s">The run's settings.</param>
    /// <param name="oneShot">True for scenarios that must run exactly once per iteration (setup per iteration).</param>
    internal static IConfig Config(Settings s, bool oneShot)
    {
        Job job = Job.Default
            .WithToolchain(InProcessEmitToolchain.Instance)
            .WithLaunchCount(1)
            .WithWarmupCount(s.BdnWarmups)
            .WithIterationCount(s.BdnIterations)
            .WithOutlierMode(OutlierMode.DontRemove); // the median needs no trimming, and "reps" stays the iteration count
        job = oneShot
            ? job.WithInvocationCount(1).WithUnrollFactor(1)
            : job.WithIterationTime(TimeInterval.FromMilliseconds(s.Quick ? 50 : 100));
        return ManualConfig.CreateEmpty()
            .AddJob(job)
            .AddLogger(new ProgressLogger())
            .AddColumnProvider(DefaultColumnProviders.Instance)
            .AddColumn(StatisticColumn.Median)
            .WithOptions(ConfigOptions.JoinSummary);
    }

    /// <summary>Median of <paramref name="method"/> in ns per operation, and how many iterations it is of.</summary>
    internal static (double Ns, int N) Median(Summary summary, string method, Func<BenchmarkDotNet.Running.BenchmarkCase, bool>? where = null)
    {
        BenchmarkReport report = summary.Reports.FirstOrDefault(r => r.BenchmarkCase.Descriptor.WorkloadMethod.Name == method && (where?.Invoke(r.BenchmarkCase) ?? true))
            ?? throw new InvalidOperationException($"BenchmarkDotNet has no report for {method}; see BenchmarkDotNet.Artifacts/*.log");
        var stats = report.ResultStatistics ?? throw new InvalidOperationException($"BenchmarkDotNet measured nothing for {method} (it threw?); see BenchmarkDotNet.Artifacts/*.log");
        return (stats.Median, stats.N);
    }

    internal static string Inv(FormattableString f) => f.ToString(CultureInfo.InvariantCulture);
}

/// <summary>How a run is made: mode, sizes, repetitions, where results go.</summary>
internal sealed record Settings
{
    public bool Quick { get; init; }
    public bool Smoke { get; init; }
    public string? PeersFile { get; init; }
    public string ResultsDir { get; init; } = "";
    public IReadOnlySet<string> Only { get; init; } = new HashSet<string>();

    /// <summary>Uncounted warm-up repetitions of a Stopwatch scenario.</summary>
    public int Warmups => 3;

    /// <summary>Counted repetitions of a Stopwatch scenario (the median is over these).</summary>
    public int Reps => Quick ? 5 : 9;

    public int BdnWarmups => Quick ? 1 : 3;
    public int BdnIterations => Quick ? 5 : 15;

    public bool Wants(string suite) => Only.Count == 0 || Only.Contains(suite);

    /// <exception cref="ArgumentException">An unknown option or a missing value.</exception>
    public static Settings Parse(string[] args)
    {
        bool quick = false, smoke = false;
        string? peers = null, results = null;
        var only = new HashSet<string>();
        for (int i = 0; i < args.Length; i++)
        {
            string a = args[i];
            switch (a)
            {
                case "--quick": quick = true; break;
                case "--smoke": smoke = quick = true; break;
                case "--peers": peers = i + 1 < args.Length ? args[++i] : throw new ArgumentException("--peers needs a file"); break;
                case "--results": results = i + 1 < args.Length ? args[++i] : throw new ArgumentException("--results needs a directory"); break;
                default:
                    if (!Program.Suites.Contains(a)) throw new ArgumentException($"unknown option or suite '{a}'");
                    only.Add(a);
                    break;
            }
        }
        return new Settings { Quick = quick, Smoke = smoke, PeersFile = peers, ResultsDir = results ?? DefaultResultsDir(), Only = only };
    }

    /// <summary><c>benchmarks/results</c> of the repository around the working directory (or around the binary).</summary>
    private static string DefaultResultsDir()
    {
        foreach (string start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
        {
            for (var d = new DirectoryInfo(start); d != null; d = d.Parent)
                if (File.Exists(Path.Combine(d.FullName, "UVm.sln"))) return Path.Combine(d.FullName, "benchmarks", "results");
        }
        return Path.Combine(Directory.GetCurrentDirectory(), "benchmarks", "results");
    }
}

/// <summary>Shows BenchmarkDotNet's progress ("// Benchmark: ...") and its errors; the full log goes to BenchmarkDotNet.Artifacts.</summary>
internal sealed class ProgressLogger : ILogger
{
    public string Id => nameof(ProgressLogger);
    public int Priority => 0;

    public void Write(LogKind logKind, string text) => WriteLine(logKind, text);

    public void WriteLine() { }

    public void WriteLine(LogKind logKind, string text)
    {
        // BenchmarkDotNet logs its hints ("// * No exporters defined ...") as errors too; show only real ones.
        if (logKind == LogKind.Error && !text.StartsWith("//", StringComparison.Ordinal)) Console.Error.WriteLine($"  BenchmarkDotNet: {text}");
        else if (text.StartsWith("// Benchmark: ", StringComparison.Ordinal)) Console.WriteLine($"  {text[3..]}");
    }

    public void Flush() => Console.Out.Flush();
}
