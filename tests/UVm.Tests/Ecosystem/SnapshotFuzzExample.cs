using System.Globalization;
using System.Text.RegularExpressions;
using NUnit.Framework;

namespace UVm.Tests.Ecosystem;

/// <summary>
/// The <c>SnapshotFuzz</c> example, run briefly (400 runs, seed 1): it exits 0, did every run,
/// found exactly the crashes its planted bugs make for that seed, its dirty-page figures are sane
/// (the write watch and the reset agree), and the guest is intact after all the resets. Built
/// into a temporary folder like the other examples (<see cref="Examples"/>).
/// </summary>
[TestFixture, Category("Slow"), NonParallelizable]
public sealed class SnapshotFuzzExample
{
    private const int Runs = 400;
    private string _work = null!;

    [OneTimeSetUp]
    public void CreateWorkDir() => _work = Tools.NewTempDir("uvm-snapshotfuzz-test");

    [OneTimeTearDown]
    public void DeleteWorkDir() => Tools.DeleteQuietly(_work);

    [Test]
    public void Runs_from_a_snapshot_finds_the_planted_crashes_and_leaves_the_snapshot_intact()
    {
        const string name = "SnapshotFuzz";
        string artifacts = Path.Combine(_work, name);
        Tools.DotnetOk(["build", Path.Combine(Tools.RepoRoot, "examples", name, $"{name}.csproj"), "-c", "Release",
            "--artifacts-path", artifacts, "-nologo", "--disable-build-servers"], Tools.RepoRoot, TimeSpan.FromSeconds(90));
        string dll = Directory.GetFiles(Path.Combine(artifacts, "bin", name), $"{name}.dll", SearchOption.AllDirectories).Single();

        (int code, string output) = Tools.Run(Tools.Dotnet, [dll, Runs.ToString(CultureInfo.InvariantCulture), "1"], Path.GetDirectoryName(dll)!, TimeSpan.FromSeconds(60));

        TestContext.Out.WriteLine(output);
        Assert.That(code, Is.Zero, output);
        Assert.That(output.TrimEnd().Split('\n')[^1].TrimEnd(), Is.EqualTo("snapshot fuzz: all checks passed"));
        Assert.That(output, Does.Contain($"runs: {Runs} in "));
        // Seed 1 draws the same inputs on every machine, and the oracle checked each run's end.
        Assert.That(output, Does.Contain("crashes found: 22 (wild store 18, write to code 4, other 0); clean halts 378"));
        Assert.That(output, Does.Contain($"ok: every run ended as the program's bugs predict ({Runs} of {Runs})"));
        Assert.That(output, Does.Contain("ok: the write watch listed exactly the pages each run wrote"));
        Assert.That(output, Does.Contain("ok: each reset compared exactly the pages its run wrote"));
        Assert.That(output, Does.Contain($"ok: after {Runs} runs the heap reads back its snapshot contents (16 pages: tags, counters zero)"));
        Assert.That(output, Does.Contain("ok: the byte code is intact"));
        Assert.That(output, Does.Contain("ok: a fresh instance of the snapshot agrees (heap and areas)"));
        Assert.That(output, Does.Contain("ok: space and snapshot disposed: every frame back in the pool"));
        Assert.That(output, Does.Match(@"run \d+: wild store: fault at pc 0x[0-9a-f]+ \(store\): Write at 0x3[0-9a-f]{5} \(NotPresent\)"), "a crash is reported as a fault, not an exception");

        Match dirty = Regex.Match(output, @"pages dirtied per run \(write watch\): avg ([0-9.]+), min (\d+), max (\d+); pages compared per reset: avg ([0-9.]+), max (\d+)");
        Assert.That(dirty.Success, Is.True, "the dirty-page figures are printed");
        double avg = double.Parse(dirty.Groups[1].Value, CultureInfo.InvariantCulture), comparedAvg = double.Parse(dirty.Groups[4].Value, CultureInfo.InvariantCulture);
        int min = int.Parse(dirty.Groups[2].Value, CultureInfo.InvariantCulture), max = int.Parse(dirty.Groups[3].Value, CultureInfo.InvariantCulture);
        int comparedMax = int.Parse(dirty.Groups[5].Value, CultureInfo.InvariantCulture);
        Assert.That(min, Is.GreaterThanOrEqualTo(2), "every run writes its input and its stack");
        Assert.That(max, Is.LessThanOrEqualTo(2 + 16), "a run writes at most the input, the stack's top page and the 16 heap pages");
        Assert.That(avg, Is.InRange((double)min, max));
        Assert.That((comparedAvg, comparedMax), Is.EqualTo((avg, max)), "a reset compares exactly the pages its run dirtied");
        Assert.That(output, Does.Match(@"\d+ runs per second"));
    }
}
