using System.Diagnostics;
using NUnit.Framework;

namespace UVm.Tests.Ecosystem;

/// <summary>
/// The examples (<c>CowFork</c>, the one <c>./build.sh</c> runs, and those beside it) build, run,
/// exit 0 and print what they promise (a run that does not end within its deadline is killed and fails). Each is built into a temporary folder (<c>--artifacts-path</c>), so the
/// repository's own build outputs are not touched.
/// </summary>
[TestFixture, Category("Slow"), NonParallelizable]
public sealed class Examples
{
    private string _work = null!;

    [OneTimeSetUp]
    public void CreateWorkDir() => _work = Tools.NewTempDir("uvm-examples-test");

    [OneTimeTearDown]
    public void DeleteWorkDir() => Tools.DeleteQuietly(_work);

    [TestCase("CowFork", "All checks passed.",
        "  parent  PPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPSSSSSSSSSSSSSSSSPPPPPPPPPPPPPPPP",
        "  child   PPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPSSSSSSSSSSSSSSSS................",
        "  parent  5 mappings; host matches page table",
        "    000000220000-000000230000 r-- frames 000000020000-000000030000 shared x2 (16 pages)",
        "verified: each space reads exactly its own writes in all 64 pages",
        "before fork 48, after fork 48 (nothing copied), after the writes 96, after both disposed 0")]
    [TestCase("DemandPaging", "demand paging: all checks passed",
        "fault: read at 0x402800 (NotPresent) -> served page 2",
        "copied 100 of 300 bytes; unresolved fault at 0x408000 (Read, NotPresent)",
        "faults: demand-zero 0, copy-on-write 0, rights-restored 0, user-handler 5, spurious 0, unresolved 2")]
    [TestCase("UntrustedBuffer", "untrusted buffer: all checks passed",
        "Truncated: length field 1000, payload bytes read 252, reader now at 0x102000, fault at 0x102000 (Read, NotPresent)",
        "BadHeader: length field 0, payload bytes read 0, reader now at 0x101ffe, fault at 0x102000 (Read, NotPresent)",
        "wrote 0 of 16 bytes; fault at 0x200000 (Write, Protection)")]
    public void Example_runs_and_exits_0(string name, string lastLine, params string[] shown)
    {
        string artifacts = Path.Combine(_work, name);
        Tools.DotnetOk(["build", Path.Combine(Tools.RepoRoot, "examples", name, $"{name}.csproj"), "-c", "Release",
            "--artifacts-path", artifacts, "-nologo", "--disable-build-servers"], Tools.RepoRoot, TimeSpan.FromSeconds(90));
        string dll = Directory.GetFiles(Path.Combine(artifacts, "bin", name), $"{name}.dll", SearchOption.AllDirectories).Single();

        var clock = Stopwatch.StartNew();
        (int code, string output) = Tools.Run(Tools.Dotnet, [dll], Path.GetDirectoryName(dll)!, TimeSpan.FromSeconds(30));
        clock.Stop();

        TestContext.Out.WriteLine($"{output}\n({clock.Elapsed.TotalMilliseconds:0} ms, process start included)");
        Assert.That(code, Is.Zero, output);
        Assert.That(output.TrimEnd().Split('\n')[^1].TrimEnd(), Is.EqualTo(lastLine));
        foreach (string line in shown) Assert.That(output, Does.Contain(line));
    }
}
