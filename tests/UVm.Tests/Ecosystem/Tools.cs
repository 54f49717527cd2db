using System.Diagnostics;
using System.Text;
using NUnit.Framework;

namespace UVm.Tests.Ecosystem;

/// <summary>Where the repository is, and how the ecosystem tests run the <c>dotnet</c> CLI and programs.</summary>
internal static class Tools
{
    /// <summary>The repository root: the first folder above the test binaries holding <c>UVm.sln</c>.</summary>
    internal static string RepoRoot { get; } = FindRoot();

    private static string FindRoot()
    {
        for (DirectoryInfo? d = new(TestContext.CurrentContext.TestDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "UVm.sln"))) return d.FullName;
        throw new InvalidOperationException($"no UVm.sln above {TestContext.CurrentContext.TestDirectory}");
    }

    /// <summary>The <c>dotnet</c> host running the tests (so the same SDK builds), else the one on PATH.</summary>
    internal static string Dotnet =>
        Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host && File.Exists(host) ? host
        : Environment.ProcessPath is { } p && Path.GetFileNameWithoutExtension(p) == "dotnet" ? p
        : "dotnet";

    /// <summary>A new empty folder under the system temporary folder (outside the repository).</summary>
    internal static string NewTempDir(string prefix)
    {
        string dir = Path.Combine(Path.GetTempPath(), $"{prefix}-{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        return dir;
    }

    /// <summary>Deletes a folder made by <see cref="NewTempDir"/>, ignoring what cannot be deleted.</summary>
    internal static void DeleteQuietly(string dir)
    {
        try { Directory.Delete(dir, recursive: true); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    /// <summary>
    /// Runs <paramref name="file"/> with <paramref name="args"/> in <paramref name="dir"/> and
    /// returns its exit code and merged output; kills it (and its children) after
    /// <paramref name="timeout"/>. Every wait is bounded: should a process it started keep the
    /// output open after it exited, the output gathered so far is returned, with a note. The child gets this process's environment without the
    /// variables a test host or MSBuild sets for itself, and without <c>LD_LIBRARY_PATH</c>,
    /// plus <paramref name="env"/>.
    /// </summary>
    internal static (int ExitCode, string Output) Run(string file, IEnumerable<string> args, string dir, TimeSpan timeout, IDictionary<string, string>? env = null)
    {
        var psi = new ProcessStartInfo(file) { WorkingDirectory = dir, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in args) psi.ArgumentList.Add(a);
        foreach (string key in psi.Environment.Keys.ToList())
        {
            if (key.StartsWith("MSBUILD", StringComparison.OrdinalIgnoreCase) || key.StartsWith("VSTEST", StringComparison.OrdinalIgnoreCase)
                || key.StartsWith("TESTINGPLATFORM", StringComparison.OrdinalIgnoreCase) || key == "LD_LIBRARY_PATH" || key == "LD_PRELOAD"
                || key == "DOTNET_STARTUP_HOOKS" || key == "CoreClrEnableProfiling" || key.StartsWith("CORECLR_", StringComparison.Ordinal))
                psi.Environment.Remove(key);
        }
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        psi.Environment["DOTNET_NOLOGO"] = "1";
        psi.Environment["DOTNET_SKIP_FIRST_TIME_EXPERIENCE"] = "1";
        psi.Environment["DOTNET_CLI_USE_MSBUILD_SERVER"] = "0";
        psi.Environment["MSBUILDDISABLENODEREUSE"] = "1";
        if (env is not null)
            foreach ((string k, string v) in env) psi.Environment[k] = v;

        var output = new StringBuilder();
        using var process = new Process { StartInfo = psi };
        using var outDone = new ManualResetEventSlim();
        using var errDone = new ManualResetEventSlim();
        // A null line is the end of the stream.
        process.OutputDataReceived += (_, e) => { if (e.Data is null) outDone.Set(); else lock (output) output.AppendLine(e.Data); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is null) errDone.Set(); else lock (output) output.AppendLine(e.Data); };
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        if (!process.WaitForExit(timeout))
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit(TimeSpan.FromSeconds(30));
            lock (output) return (-1, $"{file} {string.Join(' ', args)}: killed after {timeout.TotalSeconds:0} s\n{output}");
        }
        bool drained = outDone.Wait(TimeSpan.FromSeconds(30)) & errDone.Wait(TimeSpan.FromSeconds(30));
        lock (output)
        {
            if (!drained) output.AppendLine("(output still open 30 s after the process exited: a process it started keeps it; the rest is not shown)");
            return (process.ExitCode, output.ToString());
        }
    }

    /// <summary>Runs <c>dotnet</c> and fails the test, showing the output's tail, unless it exits 0.</summary>
    internal static string DotnetOk(IEnumerable<string> args, string dir, TimeSpan timeout, IDictionary<string, string>? env = null)
    {
        List<string> list = args.ToList();
        (int code, string output) = Run(Dotnet, list, dir, timeout, env);
        if (code != 0) Assert.Fail($"dotnet {string.Join(' ', list)} exited {code}:\n{Tail(output, 60)}");
        return output;
    }

    /// <summary>The last <paramref name="lines"/> lines of <paramref name="text"/>.</summary>
    internal static string Tail(string text, int lines)
    {
        string[] all = text.Split('\n');
        return string.Join('\n', all.Skip(Math.Max(0, all.Length - lines)));
    }
}
