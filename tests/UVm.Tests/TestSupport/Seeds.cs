using NUnit.Framework;

namespace UVm.Tests.TestSupport;

/// <summary>Seeds of randomized tests: replayable, and fresh on every run unless asked otherwise.</summary>
public static class Seeds
{
    /// <summary>
    /// The seed of a randomized test: <c>UVM_SEED</c> if set, else fresh (the clock). Printed at once
    /// (<c>[what] seed 123 (replay with UVM_SEED=123)</c>) and into the test's own output, which a
    /// failure report shows, so a failure can be replayed.
    /// </summary>
    public static int For(string what)
    {
        string? env = Environment.GetEnvironmentVariable("UVM_SEED");
        int seed = env != null && int.TryParse(env, out int s) ? s : Environment.TickCount & int.MaxValue;
        string line = $"[{what}] seed {seed} (replay with UVM_SEED={seed})";
        TestContext.Progress.WriteLine(line);
        TestContext.Out.WriteLine(line);
        return seed;
    }
}
