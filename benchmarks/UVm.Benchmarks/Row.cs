namespace UVm.Benchmarks;

/// <summary>Which way a figure is better.</summary>
internal enum Better
{
    /// <summary>A time or a cost: smaller is better.</summary>
    Lower,
    /// <summary>A throughput: larger is better.</summary>
    Higher,
}

/// <summary>What a row is judged against.</summary>
/// <param name="Text">The target as the table prints it.</param>
/// <param name="Judge">The verdict for a row (yes / NO / report / no peer / ERROR).</param>
internal sealed record Target(string Text, Func<Row, string> Judge)
{
    /// <summary>UVm ÷ peer must be at most <paramref name="limit"/> (times, costs).</summary>
    public static Target RatioAtMost(double limit) =>
        new($"<= {limit:0.0#}x (lower is better)", r => r.Ratio is { } x ? Verdict(x <= limit) : NoPeer(r));

    /// <summary>UVm ÷ peer must be at least <paramref name="limit"/> (throughputs).</summary>
    public static Target RatioAtLeast(double limit) =>
        new($">= {limit:0.0#}x (higher is better)", r => r.Ratio is { } x ? Verdict(x >= limit) : NoPeer(r));

    /// <summary>UVm's own figure must be at most <paramref name="limit"/> (the peer is only shown beside it).</summary>
    public static Target UvmAtMost(double limit, string unit) =>
        new($"UVm <= {limit:0.##} {unit}", r => r.Uvm is { } u ? Verdict(u <= limit) : "ERROR");

    /// <summary>No target: the row is there to be read.</summary>
    public static readonly Target Report = new("report", r => r.Uvm is null ? "ERROR" : "report");

    /// <summary>A target judged by a count the scenario measured, not by the ratio.</summary>
    public static Target Custom(string text, bool met) => new(text, r => r.Uvm is null ? "ERROR" : Verdict(met));

    private static string Verdict(bool met) => met ? "yes" : "NO";

    private static string NoPeer(Row r) => r.Uvm is null ? "ERROR" : "no peer";
}

/// <summary>One line of the final table: a scenario, the peer it is set against, UVm, and the target.</summary>
/// <param name="Scenario">What is measured, in a few words.</param>
/// <param name="Unit">Unit of both figures.</param>
/// <param name="Better">Which way the figures are better.</param>
/// <param name="PeerName">Who UVm is compared with.</param>
/// <param name="Peer">The peer's median, or null when it has no figure.</param>
/// <param name="Uvm">UVm's median, or null when not measured (failed).</param>
/// <param name="Target">The target and its judge.</param>
/// <param name="UvmReps">How many repetitions UVm's median is of.</param>
/// <param name="PeerReps">How many repetitions the peer's median is of.</param>
/// <param name="Note">What exactly was measured, counts, caveats.</param>
internal sealed record Row(
    string Scenario, string Unit, Better Better, string PeerName, double? Peer, double? Uvm,
    Target Target, int? UvmReps, int? PeerReps, string Note = "")
{
    /// <summary>UVm ÷ peer, when both figures exist.</summary>
    public double? Ratio => Peer is { } p && Uvm is { } u && p > 0 ? u / p : null;

    /// <summary>yes / NO / report / no peer / ERROR.</summary>
    public string Met => Target.Judge(this);

    /// <summary>A row for a scenario that threw instead of measuring.</summary>
    public static Row Failed(string scenario, Exception e) =>
        new(scenario, "-", Better.Lower, "-", null, null, Target.Report, null, null, $"FAILED: {e.GetType().Name}: {e.Message}");
}
