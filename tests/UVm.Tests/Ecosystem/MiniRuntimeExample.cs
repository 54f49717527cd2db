using System.Globalization;
using NUnit.Framework;

namespace UVm.Tests.Ecosystem;

/// <summary>
/// The <c>MiniRuntime</c> example, run with 8 clean runs: it exits 0; each planted guest bug is
/// reported as the fault of the right kind at the exact address (NotPresent for a null pointer,
/// OutOfRange for a wild one, Protection for a write to the read-only image, Guard for the heap
/// and the stack overflows); the clean runs, after awaits on thread-pool threads, return what C#
/// computes from the snapshot state; the heap reads back its snapshot contents afterwards; and
/// the pool holds no frame once the sandbox is disposed. Built into a temporary folder like the
/// other examples (<see cref="Examples"/>).
/// </summary>
[TestFixture, Category("Slow"), NonParallelizable]
public sealed class MiniRuntimeExample
{
    private const int Runs = 8;
    private string _work = null!;

    [OneTimeSetUp]
    public void CreateWorkDir() => _work = Tools.NewTempDir("uvm-miniruntime-test");

    [OneTimeTearDown]
    public void DeleteWorkDir() => Tools.DeleteQuietly(_work);

    [Test]
    public void Faults_are_reported_by_kind_and_address_and_clean_runs_start_from_the_snapshot()
    {
        const string name = "MiniRuntime";
        string artifacts = Path.Combine(_work, name);
        Tools.DotnetOk(["build", Path.Combine(Tools.RepoRoot, "examples", name, $"{name}.csproj"), "-c", "Release",
            "--artifacts-path", artifacts, "-nologo", "--disable-build-servers"], Tools.RepoRoot, TimeSpan.FromSeconds(90));
        string dll = Directory.GetFiles(Path.Combine(artifacts, "bin", name), $"{name}.dll", SearchOption.AllDirectories).Single();

        (int code, string output) = Tools.Run(Tools.Dotnet, [dll, Runs.ToString(CultureInfo.InvariantCulture)], Path.GetDirectoryName(dll)!, TimeSpan.FromSeconds(60));

        TestContext.Out.WriteLine(output);
        Assert.That(code, Is.Zero, output);
        string[] lines = output.Split('\n').Select(l => l.TrimEnd()).ToArray();
        Assert.That(lines.Last(l => l.Length > 0), Is.EqualTo("mini runtime: all checks passed"));
        Assert.That(output, Does.Not.Contain("FAILED"));
        string[] expected =
        [
            // The layout: a 1 MiB read-only image, a 16 MiB lazy heap, a guard after it, a guard below the stack.
            "  image  0x100000-0x200000  read-only, 1 MiB: 384 bytes of code, a table of 65536 squares at 0x180000",
            "  heap   0x1000000-0x2000000  read-write, 16 MiB, lazy; its header written at load",
            "  guard  0x2000000-0x2001000  after the heap",
            "  guard  0x2fff000-0x3000000  below the stack",
            "  stack  0x3000000-0x3010000  read-write, 64 KiB, lazy",
            // One fault of each kind, at the exact address; the code is the same on every machine, so are pc and step.
            "  peek(0x10): NotPresent fault: Read at 0x10 (null pointer), pc 0x100158, step 1",
            "  peek(0xdeadbeef0000): OutOfRange fault: Read at 0xdeadbeef0000 (wild pointer), pc 0x100158, step 1",
            "  fill(0x100000): Protection fault: Write at 0x100000 (write to the program), pc 0x100168, step 1",
            "  fill(0x1ffffc0): Guard fault: Write at 0x2000000 (heap overflow), pc 0x100168, step 25",
            "  triangle(100000): Guard fault: Write at 0x2fffff8 (stack overflow), pc 0x100138, step 16384",
            "  ok: guard faults counted by the space: 2",
            // The clean runs, on thread-pool threads after awaits.
            "clean runs, each after an await (before the first await, on a thread-pool thread: False; after it: True):",
            "  sieve(1000) = 168",
            "  sumsq(1000) = 332833500",
            "  triangle(100) = 5050",
            "  peek(0x1981c8) = 152399025",
            "  sieve(8919) = 1108",
            "  sumsq(11007) = 444453630591",
            "  triangle(1097) = 602253",
            "  peek(0x1a01e0) = 270405136",
            $"  ok: every clean run returned what C# computes ({Runs} of {Runs})",
            "  ok: every clean run ran on a thread-pool thread",
            "  ok: every run started from the snapshot (boot counter 0; 1 after each sieve)",
            // After the runs, and after dispose.
            "  ok: after the runs the heap reads back its snapshot contents (header, then 64 KiB of zeros)",
            "  ok: sandbox disposed: the pool holds no frame",
        ];
        foreach (string line in expected) Assert.That(lines, Does.Contain(line), $"missing line: {line}");
        Assert.That(output, Does.Match(@"snapshot taken after loading \(\d+ frames in use\)"));
    }
}
