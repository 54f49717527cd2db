using System.Diagnostics;
using NUnit.Framework;
using NUnit.Framework.Interfaces;

[assembly: UVm.Tests.TestSupport.FixtureProgress]

namespace UVm.Tests.TestSupport;

/// <summary>
/// One progress line per fixture as it ends, so a long run shows where it is:
/// <c>[12/84] Faults.SignalChaining: 9 passed (1.3 s)</c>, with failed and skipped counts when
/// there are any. Lines go to <see cref="TestContext.Progress"/>, which the test adapter shows as
/// they come; when <c>UVM_TEST_PROGRESS</c> names a file they are appended to it as well
/// (<c>build.sh test</c> shows that file while the run goes on).
/// </summary>
[AttributeUsage(AttributeTargets.Assembly)]
public sealed class FixtureProgressAttribute : Attribute, ITestAction
{
    private static readonly string? s_file = Environment.GetEnvironmentVariable("UVM_TEST_PROGRESS") is { Length: > 0 } f ? f : null;
    private static readonly object s_lock = new();
    private static int s_total, s_done;
    private static Fixture? s_current;

    /// <summary>The fixture whose tests are running, and what they came to so far.</summary>
    private sealed class Fixture(string name)
    {
        public readonly string Name = name;
        public readonly Stopwatch Clock = Stopwatch.StartNew();
        public int Passed, Failed, Skipped;
    }

    /// <inheritdoc/>
    /// <remarks>On an assembly, Suite means the assembly itself: its start counts the fixtures, its end ends the last one.</remarks>
    public ActionTargets Targets => ActionTargets.Suite | ActionTargets.Test;

    /// <inheritdoc/>
    public void BeforeTest(ITest test)
    {
        if (test.IsSuite)
        {
            if (test.TestType == "Assembly") s_total = CountFixtures(test);
            return;
        }
        string fixture = FixtureOf(test);
        lock (s_lock)
        {
            if (s_current?.Name == fixture) return;
            End(s_current);
            s_current = new Fixture(fixture);
        }
    }

    /// <inheritdoc/>
    public void AfterTest(ITest test)
    {
        lock (s_lock)
        {
            if (test.IsSuite)
            {
                if (test.TestType == "Assembly") { End(s_current); s_current = null; }
                return;
            }
            if (s_current is null) return;
            switch (TestContext.CurrentContext.Result.Outcome.Status)
            {
                case TestStatus.Passed: s_current.Passed++; break;
                case TestStatus.Failed: s_current.Failed++; break;
                default: s_current.Skipped++; break;
            }
        }
    }

    /// <summary>Writes the line of a fixture that has ended (under the lock).</summary>
    private static void End(Fixture? f)
    {
        if (f is null) return;
        string counts = $"{f.Passed} passed" + (f.Failed > 0 ? $", {f.Failed} FAILED" : "") + (f.Skipped > 0 ? $", {f.Skipped} skipped" : "");
        string line = $"[{++s_done}/{Math.Max(s_total, s_done)}] {f.Name}: {counts} ({f.Clock.Elapsed.TotalSeconds:0.0} s)";
        TestContext.Progress.WriteLine(line);
        if (s_file is null) return;
        try { File.AppendAllText(s_file, line + Environment.NewLine); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    private static bool IsFixture(ITest test) => test.TestType == "TestFixture";

    /// <summary>The name of the fixture a test case belongs to, without the <c>UVm.Tests.</c> prefix: folder and class.</summary>
    private static string FixtureOf(ITest test)
    {
        ITest? t = test.Parent;
        while (t is not null && !IsFixture(t)) t = t.Parent;
        string name = t?.FullName ?? test.ClassName ?? test.FullName;
        const string Prefix = "UVm.Tests.";
        return name.StartsWith(Prefix, StringComparison.Ordinal) ? name[Prefix.Length..] : name;
    }

    /// <summary>The runnable fixtures with tests under <paramref name="suite"/> (a filtered run may run fewer).</summary>
    private static int CountFixtures(ITest suite) =>
        suite.Tests.Sum(t => IsFixture(t) ? (t.RunState == RunState.Runnable && t.TestCaseCount > 0 ? 1 : 0) : t.IsSuite ? CountFixtures(t) : 0);
}
