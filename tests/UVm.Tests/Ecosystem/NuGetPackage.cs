using System.Diagnostics;
using System.IO.Compression;
using System.Text.RegularExpressions;
using System.Xml.Linq;
using NUnit.Framework;

namespace UVm.Tests.Ecosystem;

/// <summary>
/// UVm is a NuGet package a .NET developer adds in a minute: <c>dotnet pack</c> makes
/// <c>UVm.&lt;version&gt;.nupkg</c> with the assembly, its XML docs and the native library, and a
/// fresh console app outside the repository that references it from a local folder source builds
/// with no warning and runs (space, map, activate, a fallible copy that faults at the exact byte)
/// with no environment variable pointing at <c>libuvm.so</c>. What a user checks before taking
/// the dependency is there: a license expression, description, tags, readme and release notes;
/// a version from git (MinVer), so a new commit packs a new version; no dependency; and symbols a
/// debugger steps in with (the PDB embedded in the app's copy of <c>UVm.dll</c>, with its sources,
/// paths mapped as a CI-flagged build does; the packed <c>libuvm.so</c> stripped, its debug file
/// beside the build).
/// </summary>
/// <remarks>
/// Everything happens in temporary folders: the pack's intermediate and output files
/// (<c>--artifacts-path</c>, so a concurrent build of the repository is not disturbed), the app,
/// and a package cache of its own (<c>NUGET_PACKAGES</c>, so no stale copy of the same version is
/// used). The whole test is bounded: each step gets what is left of a generous budget, and a step
/// that finds it spent fails the test, naming the step.
/// </remarks>
[TestFixture, Category("Slow"), NonParallelizable]
public sealed class NuGetPackage
{
    private static readonly TimeSpan Budget = TimeSpan.FromMinutes(4);
    private const string OkLine = "UVm package works: copied 4096 of 8192 bytes, fault at 0x11000 (Read, NotPresent)";

    private string _work = null!;

    [SetUp]
    public void CreateWorkDir() => _work = Tools.NewTempDir("uvm-package-test");

    [TearDown]
    public void DeleteWorkDir() => Tools.DeleteQuietly(_work);

    [Test]
    public void Packed_library_builds_and_runs_in_a_fresh_console_app()
    {
        var clock = Stopwatch.StartNew();
        TimeSpan Left(string step)
        {
            TimeSpan left = Budget - clock.Elapsed;
            if (left < TimeSpan.FromSeconds(5)) Assert.Fail($"the test's {Budget.TotalMinutes:0} min safety budget was spent before {step}");
            return left;
        }
        string feed = Path.Combine(_work, "feed"), app = Path.Combine(_work, "app"), cache = Path.Combine(_work, "packages");
        Directory.CreateDirectory(app);
        var env = new Dictionary<string, string> { ["NUGET_PACKAGES"] = cache };

        // Packed as a release is: CI-flagged (deterministic, source paths mapped to /_/).
        Tools.DotnetOk(["pack", Path.Combine(Tools.RepoRoot, "src", "UVm", "UVm.csproj"), "-c", "Release", "-o", feed,
            "--artifacts-path", Path.Combine(_work, "artifacts"), "-nologo", "--disable-build-servers", "-p:ContinuousIntegrationBuild=true"],
            Tools.RepoRoot, Left("dotnet pack"), env);

        string[] packages = Directory.GetFiles(feed, "UVm.*.nupkg").Where(p => !p.EndsWith(".snupkg", StringComparison.Ordinal)).ToArray();
        Assert.That(packages, Has.Length.EqualTo(1), "one package");
        string version = Path.GetFileNameWithoutExtension(packages[0])["UVm.".Length..];
        using (ZipArchive zip = ZipFile.OpenRead(packages[0]))
        {
            string[] entries = zip.Entries.Select(e => e.FullName).ToArray();
            Assert.That(entries, Is.SupersetOf(new[] { "lib/net10.0/UVm.dll", "lib/net10.0/UVm.xml", "runtimes/linux-x64/native/libuvm.so", "README.md", "LICENSE", "CHANGELOG.md", "UVm.nuspec" }));
            Assert.That(entries.Where(e => e.EndsWith(".pdb", StringComparison.Ordinal) || e.EndsWith(".debug", StringComparison.Ordinal)), Is.Empty,
                "the PDB is inside UVm.dll; the native debug file stays beside the build");
            using (var nuspec = zip.GetEntry("UVm.nuspec")!.Open()) CheckMetadata(XDocument.Load(nuspec), version);
            string so = Path.Combine(_work, "libuvm.so");
            zip.GetEntry("runtimes/linux-x64/native/libuvm.so")!.ExtractToFile(so);
            SymbolChecks.AssertStrippedWithDebugFile(so, Path.Combine(Tools.RepoRoot, "artifacts", "native", "libuvm.so.debug"));
        }

        WriteApp(app, feed, version);
        Tools.DotnetOk(["build", "-c", "Release", "-nologo", "--disable-build-servers", "-warnaserror"], app, Left("building the consumer app (warnings fail it)"), env);
        string dll = Path.Combine(app, "bin", "Release", "net10.0", "UvmConsumer.dll");
        // What a debugger loads: the app's copy of UVm.dll.
        string uvm = Path.Combine(app, "bin", "Release", "net10.0", "UVm.dll");
        SymbolChecks.AssertDebuggable(uvm, Tools.RepoRoot, mappedPaths: true);
        CheckVersion(version, uvm);
        Assert.That(File.Exists(Path.Combine(app, "bin", "Release", "net10.0", "runtimes", "linux-x64", "native", "libuvm.so")), Is.True,
            "the native library comes with the package, under runtimes/linux-x64/native");

        // Tools.Run passes no LD_LIBRARY_PATH: the host finds libuvm.so through the app's deps.json.
        (int code, string output) = Tools.Run(Tools.Dotnet, [dll], app, Left("running the consumer app"), env);

        TestContext.Out.WriteLine($"package {Path.GetFileName(packages[0])}, consumer output:\n{output}\n({clock.Elapsed.TotalSeconds:0.0} s in all)");
        Assert.That(code, Is.Zero, output);
        Assert.That(output, Does.Contain(OkLine));
    }

    /// <summary>The nuspec carries what a user checks before taking the dependency.</summary>
    private static void CheckMetadata(XDocument nuspec, string version)
    {
        XElement meta = nuspec.Root!.Elements().Single(e => e.Name.LocalName == "metadata");
        string? Get(string name) => meta.Elements().SingleOrDefault(e => e.Name.LocalName == name)?.Value;
        XElement license = meta.Elements().Single(e => e.Name.LocalName == "license");
        Assert.That((string?)license.Attribute("type"), Is.EqualTo("expression"));
        Assert.That(license.Value, Is.EqualTo("MIT"), "the license expression matches LICENSE");
        Assert.That(File.ReadAllText(Path.Combine(Tools.RepoRoot, "LICENSE")), Does.StartWith("MIT License"));
        Assert.That(Get("version"), Is.EqualTo(version));
        Assert.That(Get("description"), Has.Length.GreaterThan(100), "a description that says what UVm is");
        Assert.That(Get("tags"), Does.Contain("page-fault").And.Contain("mmap"));
        Assert.That(Get("readme"), Is.EqualTo("README.md"));
        Assert.That(Get("releaseNotes"), Does.StartWith("## [Unreleased]").And.Match(@"\n## \[\d+\.\d+\.\d+\] - \d{4}-\d{2}-\d{2}"),
            "the release notes are the Unreleased and newest entries of CHANGELOG.md");
        Assert.That(meta.Descendants().Where(e => e.Name.LocalName == "dependency"), Is.Empty,
            "no dependency: MinVer, the analyzers and DotNet.ReproducibleBuilds are build-time only");
        XElement? repository = meta.Elements().SingleOrDefault(e => e.Name.LocalName == "repository");
        Assert.That((string?)repository?.Attribute("url") ?? "", Does.Not.StartWith("/"), "no machine path in the package");
    }

    /// <summary>
    /// The version is MinVer's, from git: <c>X.Y.Z</c> on a commit tagged <c>vX.Y.Z</c>, else a
    /// pre-release <c>X.Y.Z-alpha.0.N</c> counting the commits since the last tag; the assembly
    /// (<paramref name="dll"/>) names the commit it was packed from; CHANGELOG.md has an
    /// Unreleased entry, and an entry for X.Y.Z once that is released.
    /// </summary>
    private static void CheckVersion(string version, string dll)
    {
        Match m = Regex.Match(version, @"^(\d+\.\d+\.\d+)(-alpha\.0(?:\.(\d+))?)?$");
        Assert.That(m.Success, Is.True, $"'{version}' is a MinVer version");
        string changelog = File.ReadAllText(Path.Combine(Tools.RepoRoot, "CHANGELOG.md"));
        Assert.That(changelog, Does.Contain("\n## [Unreleased]\n"));
        (int code, string head) = Tools.Run("git", ["rev-parse", "HEAD"], Tools.RepoRoot, TimeSpan.FromSeconds(30));
        if (code != 0) return;                                   // not a git checkout: MinVer had no history either
        Assert.That(FileVersionInfo.GetVersionInfo(dll).ProductVersion, Is.EqualTo($"{version}+{head.Trim()}"),
            "the assembly's informational version is the package version and the commit");
        (_, string shallow) = Tools.Run("git", ["rev-parse", "--is-shallow-repository"], Tools.RepoRoot, TimeSpan.FromSeconds(30));
        if (m.Groups[2].Success && shallow.Trim() != "true")    // a shallow clone hides the height from MinVer
            Assert.That(m.Groups[3].Success ? int.Parse(m.Groups[3].Value, System.Globalization.CultureInfo.InvariantCulture) : 0, Is.GreaterThan(0),
                "a pre-release counts the commits since the last tag, so each commit packs a new version");
        else if (!m.Groups[2].Success)
            Assert.That(changelog, Does.Contain($"\n## [{m.Groups[1].Value}] - "), "a released version has its CHANGELOG.md entry");
    }

    private static void WriteApp(string app, string feed, string version)
    {
        File.WriteAllText(Path.Combine(app, "nuget.config"), $"""
            <?xml version="1.0" encoding="utf-8"?>
            <configuration>
              <packageSources>
                <clear />
                <add key="uvm-local" value="{feed}" />
                <add key="nuget.org" value="https://api.nuget.org/v3/index.json" protocolVersion="3" />
              </packageSources>
              <packageSourceMapping>
                <packageSource key="uvm-local"><package pattern="UVm" /></packageSource>
                <packageSource key="nuget.org"><package pattern="*" /></packageSource>
              </packageSourceMapping>
            </configuration>
            """);
        File.WriteAllText(Path.Combine(app, "UvmConsumer.csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <OutputType>Exe</OutputType>
                <TargetFramework>net10.0</TargetFramework>
                <Nullable>enable</Nullable>
                <ImplicitUsings>enable</ImplicitUsings>
                <AllowUnsafeBlocks>true</AllowUnsafeBlocks>
              </PropertyGroup>
              <ItemGroup>
                <PackageReference Include="UVm" Version="[{version}]" />
              </ItemGroup>
            </Project>
            """);
        File.WriteAllText(Path.Combine(app, "Program.cs"), """
            using UVm;
            using UVm.Areas;
            using UVm.Faults;
            using UVm.Frames;
            using UVm.Io;
            using UVm.Spaces;

            using var space = new VmSpace(new VmSpaceOptions { Size = 1UL << 30 });
            using (UFrame frame = space.Pool.AllocFrame())
            {
                var w = frame.Writer();
                w.Write(Enumerable.Repeat((byte)0x5A, 4096).ToArray());
                using CursorMut cursor = space.CursorMut(VaddrRange.FromLength(0x10000, 4096));
                cursor.Map(frame, PageProperty.New(PageFlags.RW));
            }
            space.Activate();
            var reader = space.Reader(0x10000, 8192);       // the second page is not mapped
            var buffer = new byte[8192];
            CopyResult r = reader.ReadFallible(buffer);
            bool ok = r.Bytes == 4096 && r.Error == UVmError.PageFault
                && r.Fault == new PageFaultInfo(0x11000, PageFaultAccess.Read, PageFaultKind.NotPresent, 11)
                && buffer.AsSpan(0, 4096).IndexOfAnyExcept((byte)0x5A) < 0 && buffer.AsSpan(4096).IndexOfAnyExcept((byte)0) < 0;
            if (!ok)
            {
                Console.WriteLine($"UNEXPECTED: copied {r.Bytes}, {r.Error}, {r.Fault}");
                return 1;
            }
            // Faults that get resolved: demand paging of a lazy area, then a copy-on-write fork.
            using var areas = new AddressSpace(new VmSpaceOptions { Size = 1UL << 30 });
            ulong va = areas.Map(1 << 20, new AreaBackend.Alloc(Populate: false), new VmMapOptions { Flags = PageFlags.RW });
            areas.Space.Activate();
            var aw = areas.Space.Writer(va, 8192);
            CopyResult wr = aw.WriteFallible(Enumerable.Repeat((byte)0x33, 8192).ToArray());
            using AddressSpace child = areas.Fork();
            child.Space.Activate();
            var cw = child.Space.Writer(va, 1);
            CopyResult cwr = cw.WriteFallible(new byte[] { 0x44 });
            areas.Space.Activate();
            var ar = areas.Space.Reader(va, 1);
            var first = new byte[1];
            ar.ReadFallible(first);
            if (!wr.IsOk || wr.Bytes != 8192 || areas.Stats.DemandZeroFaults < 1 || !cwr.IsOk || child.Stats.CopyOnWriteCopies != 1 || first[0] != 0x33)
            {
                Console.WriteLine($"UNEXPECTED: demand paging {wr}, faults {areas.Stats.DemandZeroFaults}; copy-on-write {cwr}, copies {child.Stats.CopyOnWriteCopies}; parent byte 0x{first[0]:x2}");
                return 1;
            }
            Console.WriteLine($"UVm package works: copied {r.Bytes} of {buffer.Length} bytes, fault at 0x{r.Fault!.Value.Address:x} ({r.Fault.Value.Access}, {r.Fault.Value.Kind})");
            return 0;
            """);
    }
}
