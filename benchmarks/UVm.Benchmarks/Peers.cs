using System.Globalization;
using System.Text.RegularExpressions;

namespace UVm.Benchmarks;

/// <summary>
/// One figure printed by a C peer (<c>benchmarks/peers</c>):
/// <c>PEER &lt;scenario&gt; &lt;unit&gt; &lt;median&gt; reps=&lt;n&gt; key=value...</c>.
/// </summary>
internal sealed record PeerFigure(string Scenario, string Unit, double Median, int Reps, IReadOnlyDictionary<string, string> Extras)
{
    /// <summary>An extra <c>key=value</c> as a number, or null.</summary>
    public double? Number(string key) =>
        Extras.TryGetValue(key, out string? v) && double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out double d) ? d : null;
}

/// <summary>The peers' figures of this run, read from <c>benchmarks/peers/run.sh</c>'s output.</summary>
internal sealed partial class PeerResults
{
    private readonly Dictionary<string, PeerFigure> _figures = new();
    private readonly Dictionary<string, string> _unavailable = new();

    /// <summary>Where the figures came from (for the table's heading).</summary>
    public string Source { get; private init; } = "no peer file given";

    public static PeerResults Empty => new();

    /// <summary>Reads every <c>PEER</c> line of <paramref name="path"/>; other lines are ignored.</summary>
    /// <exception cref="FormatException">A line starting with <c>PEER </c> is malformed.</exception>
    public static PeerResults Load(string path)
    {
        var results = new PeerResults { Source = path };
        foreach (string line in File.ReadLines(path)) results.Add(line);
        return results;
    }

    /// <summary>Parses one line; returns false for a line that is not a <c>PEER</c> line.</summary>
    /// <exception cref="FormatException">The line starts with <c>PEER </c> but is malformed.</exception>
    public bool Add(string line)
    {
        if (!line.StartsWith("PEER ", StringComparison.Ordinal)) return false;
        Match m = PeerLine().Match(line);
        if (!m.Success) throw new FormatException($"malformed peer line: '{line}'");
        string scenario = m.Groups["scenario"].Value, unit = m.Groups["unit"].Value;
        var extras = new Dictionary<string, string>();
        foreach (Capture c in m.Groups["extra"].Captures)
        {
            int eq = c.Value.IndexOf('=');
            extras[c.Value[..eq].Trim()] = c.Value[(eq + 1)..];
        }
        int reps = int.Parse(m.Groups["reps"].Value, CultureInfo.InvariantCulture);
        if (unit == "unavailable" || reps == 0)
        {
            _unavailable[scenario] = string.Join(' ', extras.Select(kv => $"{kv.Key}={kv.Value}"));
            return true;
        }
        double median = double.Parse(m.Groups["median"].Value, NumberStyles.Float, CultureInfo.InvariantCulture);
        _figures[scenario] = new PeerFigure(scenario, unit, median, reps, extras);
        return true;
    }

    /// <summary>The figure of <paramref name="scenario"/> in <paramref name="unit"/>, or null if the peer did not run or did not give one.</summary>
    /// <exception cref="FormatException">The peer printed the scenario in another unit (the harness and the peers disagree).</exception>
    public PeerFigure? Get(string scenario, string unit)
    {
        if (!_figures.TryGetValue(scenario, out PeerFigure? f)) return null;
        if (f.Unit != unit) throw new FormatException($"peer {scenario} reports {f.Unit}, the harness expects {unit}");
        return f;
    }

    /// <summary>Why a peer gave no figure, for a note.</summary>
    public string Missing(string scenario) =>
        _unavailable.TryGetValue(scenario, out string? why) ? $"peer {scenario} unavailable ({Why(why)})" : $"peer {scenario} did not run";

    /// <summary>The peers that printed an "unavailable" line, each with why, for the smoke's skip lines.</summary>
    public IEnumerable<(string Scenario, string Why)> Unavailable => _unavailable.Select(kv => (kv.Key, Why(kv.Value)));

    /// <summary><c>not_installed=PKG</c> (an optional peer's library is missing) said in words, with how to install it; other reasons as printed.</summary>
    private static string Why(string extras) =>
        extras.StartsWith("not_installed=", StringComparison.Ordinal) && extras["not_installed=".Length..] is { Length: > 0 } package && !package.Contains(' ')
            ? $"{package} is not installed; to measure this peer: apt-get install {package}"
            : extras;

    public int Count => _figures.Count;

    [GeneratedRegex(@"^PEER (?<scenario>[A-Za-z0-9_]+) (?<unit>[A-Za-z0-9_]+) (?<median>[0-9.]+(?:[eE][-+]?[0-9]+)?) reps=(?<reps>[0-9]+)(?<extra> [A-Za-z0-9_]+=[^ ]+)*$")]
    private static partial Regex PeerLine();
}
