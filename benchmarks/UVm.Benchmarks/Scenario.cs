namespace UVm.Benchmarks;

/// <summary>What every suite of scenarios needs: a failed scenario as a failed row, the samples after the warm-ups, sizes in words.</summary>
internal static class Scenario
{
    /// <summary>The row <paramref name="measure"/> makes, or a failed row (and the exception on stderr) when it throws.</summary>
    internal static Row Guard(string scenario, Func<Row> measure)
    {
        try
        {
            return measure();
        }
        catch (Exception e)
        {
            Console.Error.WriteLine($"UVm.Benchmarks: scenario '{scenario}' failed: {e}");
            return Row.Failed(scenario, e);
        }
    }

    /// <summary>The rows <paramref name="measure"/> makes, or one failed row when it throws.</summary>
    internal static IEnumerable<Row> GuardMany(string scenario, Func<IEnumerable<Row>> measure)
    {
        try
        {
            return measure().ToList();
        }
        catch (Exception e)
        {
            Console.Error.WriteLine($"UVm.Benchmarks: scenario '{scenario}' failed: {e}");
            return [Row.Failed(scenario, e)];
        }
    }

    /// <summary>The last <paramref name="reps"/> values (the ones after the Sampler's warm-ups).</summary>
    internal static Samples Counted(List<double> all, int reps) => new(all.Skip(all.Count - reps).ToArray());

    /// <summary>"16 MiB", "1 GiB".</summary>
    internal static string Size(ulong bytes) =>
        bytes >= 1UL << 30 && bytes % (1UL << 30) == 0 ? Program.Inv($"{bytes >> 30} GiB") : Program.Inv($"{(double)bytes / (1UL << 20):0} MiB");
}
