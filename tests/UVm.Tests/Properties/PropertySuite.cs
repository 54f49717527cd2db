using System.Diagnostics;
using FsCheck;
using FsCheck.Fluent;
using Microsoft.FSharp.Core;
using NUnit.Framework;

namespace UVm.Tests.Properties;

/// <summary>
/// What every property of this suite shares: the seed, the case count, and the one way a
/// property is run (FsCheck, seeded, no shrinking).
/// </summary>
/// <remarks>
/// <para>Seed: <c>UVM_SEED</c> if set (as <see cref="Reliability.Harness.Seed"/> reads it), else
/// fresh; printed at the start and the end. Each property draws from its own stream, derived
/// from the seed and the property's name, so one property replays alike whether it runs alone
/// or with the others. Races depend on thread timing too: their inputs (what is raced against
/// what, and the spin delays) replay, their interleavings may not.</para>
/// <para>No shrinking: a case builds host state (arenas, memfds, mappings), and a failing case
/// is reported with the exact input FsCheck generated, which is what a replay needs.</para>
/// </remarks>
public static class PropertySuite
{
    /// <summary>
    /// Whether the library bugs that kill the process (a read or write of unmapped host memory
    /// is an <see cref="AccessViolationException"/>, which .NET does not let a test catch) are
    /// fixed. True in the committed suite: those cases run and assert the fixed behaviour. Set
    /// <c>UVM_KNOWN_CRASHERS=skip</c> (or flip this) to run the rest of the suite on a library
    /// that still has them; the skipped cases are counted and printed.
    /// </summary>
    /// <remarks>
    /// The cases behind it: <see cref="Frames.FramePool.ReferenceCount"/> of an address past the
    /// pool or of a disposed pool (reads past or after the pool's metadata), a
    /// <see cref="Spaces.VmSpace.CursorMut"/> (or an areas operation that makes one) racing
    /// <see cref="Spaces.VmSpace.Dispose"/> (the cursor can dispatch <c>mmap(MAP_FIXED)</c> into
    /// the arena's host range after it was given back), and an allocation racing
    /// <see cref="Frames.FramePool.Dispose"/> (it writes the disposed pool's metadata).
    /// </remarks>
    public static bool KnownCrashersFixed = Environment.GetEnvironmentVariable("UVM_KNOWN_CRASHERS") != "skip";

    private static readonly Lazy<int> s_seed = new(() =>
    {
        string? env = Environment.GetEnvironmentVariable("UVM_SEED");
        return env != null && int.TryParse(env, out int s) ? s : Environment.TickCount & int.MaxValue;
    });

    private static long s_cases, s_skipped;
    private static SortedDictionary<string, long>? s_tally; // what the running property's cases came to
    private static readonly object s_lock = new();
    private static readonly SortedDictionary<string, long> s_perProperty = new(StringComparer.Ordinal);

    /// <summary>The suite's seed.</summary>
    public static int Seed => s_seed.Value;

    /// <summary>Cases run so far, all properties together.</summary>
    public static long Cases => Interlocked.Read(ref s_cases);

    /// <summary>Cases not run because they would kill the process on a library with known crashers (see <see cref="KnownCrashersFixed"/>).</summary>
    public static long Skipped => Interlocked.Read(ref s_skipped);

    /// <summary>
    /// Checks <paramref name="property"/> on <paramref name="cases"/> inputs drawn from
    /// <paramref name="inputs"/>. The property asserts (NUnit) or throws on a wrong outcome; the
    /// first failure stops the run and is reported with its input, the suite seed and the
    /// property's own replay seed.
    /// </summary>
    public static void Check<T>(string name, int cases, Gen<T> inputs, Action<T> property)
    {
        ulong stream = StreamOf(name);
        var config = Config.QuickThrowOnFailure
            .WithMaxTest(cases)
            .WithMaxRejected(cases)
            .WithQuietOnSuccess(true)
            .WithName(name)
            .WithReplay(FSharpOption<Replay>.Some(new Replay(new Rnd(stream), FSharpOption<int>.None)));
        long ran = 0;
        var clock = Stopwatch.StartNew();
        lock (s_lock) s_tally = new SortedDictionary<string, long>(StringComparer.Ordinal);
        try
        {
            FsCheck.Check.One(config, Prop.ForAll(Arb.From(inputs), (T input) =>
            {
                ran++;
                Interlocked.Increment(ref s_cases);
                property(input);
            }));
        }
        catch (Exception e) when (e is not AssertionException)
        {
            throw new AssertionException($"property '{name}' failed (suite seed {Seed}: replay with UVM_SEED={Seed}):{Environment.NewLine}{e.Message}", e);
        }
        finally
        {
            string tally;
            lock (s_lock)
            {
                s_perProperty[name] = s_perProperty.GetValueOrDefault(name) + ran;
                tally = s_tally!.Count == 0 ? "" : " (" + string.Join(", ", s_tally.Select(kv => $"{kv.Key} {kv.Value}")) + ")";
                s_tally = null;
            }
            TestContext.Progress.WriteLine($"[properties] {name}: {ran} cases in {clock.Elapsed.TotalSeconds:F1} s{tally}");
        }
    }

    /// <summary>Counts one case of the running property as <paramref name="what"/> (printed with the property's count, to show what the cases reached).</summary>
    public static void Tally(string what)
    {
        lock (s_lock)
            if (s_tally != null) s_tally[what] = s_tally.GetValueOrDefault(what) + 1;
    }

    /// <summary>
    /// Whether a case that kills the process on a library with known crashers may run; counts
    /// it as skipped when not. Use as <c>if (!PropertySuite.MayRun(crashes)) return;</c>.
    /// </summary>
    public static bool MayRun(bool wouldCrashUnfixed)
    {
        if (!wouldCrashUnfixed || KnownCrashersFixed) return true;
        Interlocked.Increment(ref s_skipped);
        return false;
    }

    /// <summary>A stream of its own per property: the seed mixed with a stable hash (FNV-1a) of the name.</summary>
    private static ulong StreamOf(string name)
    {
        ulong h = 14695981039346656037UL;
        foreach (char c in name) h = (h ^ c) * 1099511628211UL;
        return h ^ ((ulong)(uint)Seed * 0x9E3779B97F4A7C15UL);
    }

    internal static string Summary()
    {
        lock (s_lock)
        {
            var sb = new System.Text.StringBuilder();
            foreach ((string name, long n) in s_perProperty) sb.AppendLine($"  {name,-64} {n,8:N0}");
            return sb.ToString();
        }
    }
}

/// <summary>Prints the seed before the first property and the count of cases after the last one.</summary>
[SetUpFixture]
public sealed class PropertySuiteReport
{
    private readonly Stopwatch _wall = new();

    [OneTimeSetUp]
    public void Start()
    {
        _wall.Start();
        TestContext.Progress.WriteLine($"[properties] seed {PropertySuite.Seed} (replay with UVM_SEED={PropertySuite.Seed}); known crashers fixed: {PropertySuite.KnownCrashersFixed}");
    }

    [OneTimeTearDown]
    public void Print()
    {
        TestContext.Progress.Write(PropertySuite.Summary());
        string skipped = PropertySuite.Skipped > 0 ? $" ({PropertySuite.Skipped:N0} of them not run: known crashers)" : "";
        TestContext.Progress.WriteLine(
            $"[properties] {PropertySuite.Cases:N0} cases in {_wall.Elapsed.TotalSeconds:F1} s{skipped}; seed {PropertySuite.Seed} (replay with UVM_SEED={PropertySuite.Seed})");
    }
}
