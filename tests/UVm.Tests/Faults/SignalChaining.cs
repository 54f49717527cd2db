using System.Diagnostics;
using System.Runtime.CompilerServices;
using NUnit.Framework;
using UVm.Faults;
using UVm.Io;
using UVm.Spaces;
using UVm.Interop;

namespace UVm.Tests.Faults;

/// <summary>
/// UVm claims only the faults of its own primitives; every other SIGSEGV/SIGBUS reaches the
/// action installed before it, unchanged. In this process that is the .NET runtime (null
/// dereferences stay <see cref="NullReferenceException"/>); in a child process (signal_child.c)
/// it is a plain C handler, or the default action that kills the process.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class SignalChaining : GuestFixture
{
    private const int SIGBUS = 7, SIGSEGV = 11;
    private string _dir = null!;
    private string _child = null!;

    private sealed class Box
    {
        public int Value = 1;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static int Touch(Box? box) => box!.Value;

    /// <summary>signal_child.c: beside this file, or found from the test binaries up to the repository.</summary>
    private static string ChildSource([CallerFilePath] string thisFile = "")
    {
        const string name = "signal_child.c";
        string beside = Path.Combine(Path.GetDirectoryName(thisFile) ?? "", name);
        if (File.Exists(beside)) return beside;
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "tests", "UVm.Tests", "Faults", name);
            if (File.Exists(candidate)) return candidate;
        }
        Assert.Fail($"{name} not found beside {thisFile} nor above {AppContext.BaseDirectory}");
        return null!;
    }

    [OneTimeSetUp]
    public void CompileTheChild()
    {
        string source = ChildSource();
        _dir = Directory.CreateTempSubdirectory("uvm-signal-child-").FullName;
        _child = Path.Combine(_dir, "signal_child");
        (int code, string output) = Run("cc", "-O0", "-Wall", "-Wextra", "-Werror", "-o", _child, source, "-ldl");
        Assert.That(code, Is.Zero, $"compiling signal_child.c failed:\n{output}");
    }

    [OneTimeTearDown]
    public void RemoveTheChild()
    {
        if (_dir != null) Directory.Delete(_dir, recursive: true);
    }

    private static (int ExitCode, string Output) Run(string program, params string[] args)
    {
        var info = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in args) info.ArgumentList.Add(a);
        using Process process = Process.Start(info)!;
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(60_000))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"{program} {string.Join(' ', args)} did not finish in 60 s");
        }
        if (!Task.WaitAll([stdout, stderr], TimeSpan.FromSeconds(30)))
            Assert.Fail($"{program} {string.Join(' ', args)} exited, but its output stayed open for 30 s");
        return (process.ExitCode, stdout.Result + stderr.Result);
    }

    private (int ExitCode, string Output) RunChild(string mode)
    {
        string lib = Path.Combine(Path.GetDirectoryName(typeof(VmSpace).Assembly.Location)!, "libuvm.so");
        Assert.That(File.Exists(lib), Is.True, $"{lib} beside UVm.dll");
        return Run(_child, lib, mode);
    }

    /// <summary>How .NET reports a child killed by a signal.</summary>
    private static int KilledBy(int signal) => 128 + signal;

    [Test]
    public void A_null_dereference_is_still_a_NullReferenceException_after_a_claimed_fault()
    {
        var reader = Space.Reader(Va, 8);
        ulong claimed = NativeFaults.ClaimedFaults;
        Assert.That(reader.ReadVal<ulong>().Error, Is.EqualTo(UVmError.PageFault));
        Assert.That(NativeFaults.ClaimedFaults, Is.GreaterThan(claimed), "UVm's handler is installed and claimed its fault");

        ulong forwarded = NativeFaults.ForwardedSignals;
        Assert.Throws<NullReferenceException>(() => Touch(null));
        Assert.That(NativeFaults.ForwardedSignals, Is.GreaterThan(forwarded), "the runtime got the SIGSEGV through UVm's handler");
    }

    [Test, CancelAfter(30_000)]
    public void Claimed_faults_and_null_dereferences_interleave()
    {
        MapPatterned(Va);
        int nullRefs = 0;
        for (int i = 0; i < 200; i++)
        {
            var reader = Space.Reader(Va + Page - 4, 8);
            Assert.That(reader.ReadFallible(new byte[8]).Bytes, Is.EqualTo(4UL));
            try
            {
                Touch(i % 2 == 0 ? null : new Box());
            }
            catch (NullReferenceException)
            {
                nullRefs++;
            }
        }
        Assert.That(nullRefs, Is.EqualTo(100));
    }

    [Test]
    public void A_foreign_fault_with_no_previous_handler_kills_the_process_with_SIGSEGV()
    {
        (int code, string output) = RunChild("default");
        Assert.That(output, Does.Contain("uvm_copy recovered"));
        Assert.That(code, Is.EqualTo(KilledBy(SIGSEGV)), output);
    }

    [Test]
    public void A_previous_SA_SIGINFO_handler_receives_the_fault_with_its_siginfo()
    {
        (int code, string output) = RunChild("siginfo");
        Assert.That(output, Does.Contain("previous SA_SIGINFO handler got the fault"));
        Assert.That(code, Is.EqualTo(42), output);
    }

    [Test]
    public void A_previous_plain_handler_receives_the_fault()
    {
        (int code, string output) = RunChild("plain");
        Assert.That(code, Is.EqualTo(43), output);
    }

    [Test]
    public void A_previous_handler_that_fixes_the_fault_gets_the_access_retried()
    {
        (int code, string output) = RunChild("fixing");
        Assert.That(output, Does.Contain("the faulting store was retried"));
        Assert.That(code, Is.Zero, output);
    }

    [Test]
    public void A_user_sent_SIGSEGV_is_not_claimed_and_kills_the_process()
    {
        (int code, string output) = RunChild("user");
        Assert.That(output, Does.Not.Contain("survived"));
        Assert.That(code, Is.EqualTo(KilledBy(SIGSEGV)), output);
    }

    [Test]
    public void A_foreign_SIGBUS_reaches_the_previous_handler()
    {
        (int code, string output) = RunChild("bus");
        Assert.That(code, Is.EqualTo(44), output);
    }

    [Test]
    public void A_foreign_SIGBUS_with_no_previous_handler_kills_the_process_with_SIGBUS()
    {
        (int code, string output) = RunChild("bus-dfl");
        Assert.That(code, Is.EqualTo(KilledBy(SIGBUS)), output);
    }
}
