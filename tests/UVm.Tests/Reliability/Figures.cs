using System.Diagnostics;
using System.Text;
using NUnit.Framework;

namespace UVm.Tests.Reliability;

/// <summary>
/// The figures of a reliability run (cases, operations, threads × seconds, faults, leaks),
/// gathered by the fixtures and printed once at the end, for <c>docs/RELIABILITY.md</c>.
/// </summary>
public static class Figures
{
    private static readonly object s_lock = new();
    private static readonly SortedDictionary<string, long> s_counts = new(StringComparer.Ordinal);
    private static readonly List<string> s_notes = new();

    /// <summary>Adds <paramref name="amount"/> to the figure <paramref name="name"/>.</summary>
    public static void Add(string name, long amount)
    {
        lock (s_lock) s_counts[name] = s_counts.GetValueOrDefault(name) + amount;
    }

    /// <summary>Records a line of free text (a seed, a finding).</summary>
    public static void Note(string line)
    {
        lock (s_lock) s_notes.Add(line);
        TestContext.Progress.WriteLine(line);
    }

    internal static string Render(TimeSpan elapsed)
    {
        var sb = new StringBuilder();
        sb.AppendLine($"UVm reliability figures ({DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, {Environment.ProcessorCount} cores, soak={Harness.Soak}, wall {elapsed.TotalSeconds:F1} s)");
        lock (s_lock)
        {
            foreach ((string name, long value) in s_counts) sb.AppendLine($"  {name,-48} {value,14:N0}");
            foreach (string note in s_notes) sb.AppendLine("  " + note);
        }
        return sb.ToString();
    }
}

/// <summary>Prints the figures after every reliability fixture ran, and leaves them beside the test assembly.</summary>
[SetUpFixture]
public sealed class FiguresReport
{
    private readonly Stopwatch _wall = new();

    [OneTimeSetUp]
    public void Start() => _wall.Start();

    [OneTimeTearDown]
    public void Print()
    {
        string text = Figures.Render(_wall.Elapsed);
        TestContext.Progress.WriteLine(text);
        try
        {
            File.WriteAllText(Path.Combine(AppContext.BaseDirectory, "reliability-figures.txt"), text);
        }
        catch (IOException)
        {
            // The figures are informative; a read-only output directory must not fail the run.
        }
    }
}
