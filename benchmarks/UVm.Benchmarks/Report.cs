using System.Globalization;
using System.Text;
using System.Text.Json;

namespace UVm.Benchmarks;

/// <summary>
/// The one table of a run: a Markdown table a person reads on the console and in
/// <c>benchmarks/results/latest.md</c>, and the same rows as JSON in <c>latest.json</c>.
/// </summary>
internal sealed class Report
{
    /// <summary>The table's columns, in order.</summary>
    public static readonly string[] Columns =
        ["scenario", "unit", "peer", "peer figure", "UVm", "UVm÷peer", "target", "met", "reps UVm/peer"];

    /// <summary>Every value the "met" column may hold.</summary>
    public static readonly string[] Verdicts = ["yes", "NO", "report", "no peer", "ERROR"];

    private readonly IReadOnlyList<Row> _rows;
    private readonly string _heading;

    public Report(IReadOnlyList<Row> rows, string heading)
    {
        _rows = rows;
        _heading = heading;
    }

    public IReadOnlyList<Row> Rows => _rows;

    /// <summary>The cells of one row, in <see cref="Columns"/> order.</summary>
    public static string[] Cells(Row r) =>
    [
        r.Scenario, r.Unit, r.PeerName, Fmt(r.Peer), Fmt(r.Uvm),
        r.Ratio is { } x ? $"{FmtRatio(x)}x" : "-",
        r.Target.Text, r.Met, $"{r.UvmReps?.ToString(CultureInfo.InvariantCulture) ?? "-"}/{r.PeerReps?.ToString(CultureInfo.InvariantCulture) ?? "-"}",
    ];

    /// <summary>The heading, the table (columns padded so it also reads as plain text) and the notes.</summary>
    public string Markdown()
    {
        var cells = _rows.Select(Cells).ToList();
        int[] width = Columns.Select((c, i) => Math.Max(c.Length, cells.Count == 0 ? 0 : cells.Max(row => row[i].Length))).ToArray();
        var sb = new StringBuilder();
        sb.AppendLine("# UVm beside its peers").AppendLine();
        sb.AppendLine(_heading).AppendLine();
        sb.AppendLine(Line(Columns, width));
        sb.AppendLine("|" + string.Join("|", width.Select((w, i) => new string('-', w + 2))) + "|");
        foreach (string[] row in cells) sb.AppendLine(Line(row, width));
        sb.AppendLine();
        sb.AppendLine("Notes:");
        foreach (Row r in _rows.Where(r => r.Note.Length > 0))
            sb.AppendLine($"* **{r.Scenario}** vs {r.PeerName}: {r.Note}");
        return sb.ToString();
    }

    /// <summary>
    /// The rows as a JSON array of objects with <c>scenario</c>, <c>unit</c>, <c>uvm</c>, <c>peer</c>,
    /// <c>ratio</c> (UVm ÷ peer), <c>target</c>, <c>met</c>, <c>reps</c> (UVm's repetitions), plus
    /// <c>peer_name</c>, <c>peer_reps</c>, <c>better</c> and <c>note</c>. Missing figures are null.
    /// </summary>
    public string Json()
    {
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartArray();
            foreach (Row r in _rows)
            {
                w.WriteStartObject();
                w.WriteString("scenario", r.Scenario);
                w.WriteString("unit", r.Unit);
                Number(w, "uvm", r.Uvm);
                Number(w, "peer", r.Peer);
                Number(w, "ratio", r.Ratio);
                w.WriteString("target", r.Target.Text);
                w.WriteString("met", r.Met);
                Number(w, "reps", r.UvmReps);
                w.WriteString("peer_name", r.PeerName);
                Number(w, "peer_reps", r.PeerReps);
                w.WriteString("better", r.Better == Better.Lower ? "lower" : "higher");
                w.WriteString("note", r.Note);
                w.WriteEndObject();
            }
            w.WriteEndArray();
        }
        return Encoding.UTF8.GetString(stream.ToArray()) + "\n";
    }

    /// <summary>Writes <c>latest.md</c> and <c>latest.json</c> into <paramref name="dir"/> (created if needed).</summary>
    public void Write(string dir)
    {
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "latest.md"), Markdown());
        File.WriteAllText(Path.Combine(dir, "latest.json"), Json());
    }

    private static string Line(string[] cells, int[] width) =>
        "| " + string.Join(" | ", cells.Select((c, i) => i is 3 or 4 or 5 ? c.PadLeft(width[i]) : c.PadRight(width[i]))) + " |";

    private static void Number(Utf8JsonWriter w, string name, double? v)
    {
        if (v is { } d && double.IsFinite(d)) w.WriteNumber(name, Math.Round(d, 4));
        else w.WriteNull(name);
    }

    /// <summary>Three significant figures or more, never scientific notation.</summary>
    internal static string Fmt(double? value) => value switch
    {
        null => "-",
        >= 100 => value.Value.ToString("F0", CultureInfo.InvariantCulture),
        >= 10 => value.Value.ToString("F1", CultureInfo.InvariantCulture),
        >= 1 => value.Value.ToString("F2", CultureInfo.InvariantCulture),
        >= 0.01 => value.Value.ToString("F3", CultureInfo.InvariantCulture),
        _ => value.Value.ToString("F4", CultureInfo.InvariantCulture),
    };

    private static string FmtRatio(double x) => x >= 100 ? x.ToString("F0", CultureInfo.InvariantCulture) : x.ToString("F2", CultureInfo.InvariantCulture);
}
