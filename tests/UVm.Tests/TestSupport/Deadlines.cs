using System.Diagnostics;
using NUnit.Framework;

namespace UVm.Tests.TestSupport;

/// <summary>
/// Waits that cannot hang a run. Every wait here has a deadline, and running out of it fails the
/// test with a message saying what was awaited; it also ends early, failing, when the test's
/// <c>[CancelAfter]</c> time has run out (NUnit only signals a token, which nothing else reads).
/// A deadline is a safety net against deadlocks, never a judgement of the machine's speed: it is
/// far above what any wait needs, even on a slow, shared 2-core machine.
/// </summary>
public static class Deadlines
{
    /// <summary>The default deadline of every wait.</summary>
    public static readonly TimeSpan Generous = TimeSpan.FromSeconds(60);

    /// <summary>How often a wait looks at the test's cancellation token.</summary>
    private static readonly TimeSpan Slice = TimeSpan.FromMilliseconds(100);

    /// <summary>The running test's cancellation token (signalled when its <c>[CancelAfter]</c> time is over), if there is a test.</summary>
    private static CancellationToken TestToken()
    {
        try
        {
            return TestContext.CurrentContext.CancellationToken;
        }
        catch (Exception e) when (e is InvalidOperationException or NullReferenceException)
        {
            return CancellationToken.None; // not on a thread NUnit knows
        }
    }

    private static string Seconds(TimeSpan t) => $"{t.TotalSeconds:0.#} s";

    /// <summary>
    /// Waits in slices until <paramref name="done"/> (given the slice to wait) returns true; false
    /// once <paramref name="limit"/> is over or the test is cancelled.
    /// </summary>
    private static bool InSlices(Func<TimeSpan, bool> done, TimeSpan limit, out bool cancelled)
    {
        CancellationToken token = TestToken();
        var clock = Stopwatch.StartNew();
        cancelled = false;
        while (true)
        {
            TimeSpan left = limit - clock.Elapsed;
            if (done(left <= TimeSpan.Zero ? TimeSpan.Zero : left < Slice ? left : Slice)) return true;
            if (token.IsCancellationRequested)
            {
                cancelled = true;
                return false;
            }
            if (clock.Elapsed >= limit) return false;
        }
    }

    private static void Fail(string what, TimeSpan limit, bool cancelled) =>
        Assert.Fail(cancelled
            ? $"{what}: still waiting when the test's [CancelAfter] time ran out (deadlock?)"
            : $"{what}: not done within {Seconds(limit)} (deadlock?)");

    /// <summary>
    /// Polls <paramref name="condition"/> until it holds; false if it still does not when
    /// <paramref name="limit"/> (default <see cref="Generous"/>) is over or the test is cancelled.
    /// For threads that must not throw (a page-fault handler, a worker): assert on the result later.
    /// </summary>
    public static bool TryUntil(Func<bool> condition, TimeSpan? limit = null)
    {
        var spin = new SpinWait();
        return InSlices(slice =>
        {
            var clock = Stopwatch.StartNew();
            do
            {
                if (condition()) return true;
                if (spin.NextSpinWillYield) Thread.Sleep(1);
                else spin.SpinOnce();
            }
            while (clock.Elapsed < slice);
            return condition();
        }, limit ?? Generous, out _);
    }

    /// <summary>Polls <paramref name="condition"/> until it holds; fails the test, naming <paramref name="what"/>, if it does not in time.</summary>
    public static void Until(Func<bool> condition, string what, TimeSpan? limit = null)
    {
        TimeSpan l = limit ?? Generous;
        CancellationToken token = TestToken();
        if (!TryUntil(condition, l)) Fail(what, l, token.IsCancellationRequested);
    }

    /// <summary>Waits for <paramref name="thread"/> to end; fails the test if it does not in time.</summary>
    public static void Join(Thread thread, string? what = null, TimeSpan? limit = null)
    {
        TimeSpan l = limit ?? Generous;
        if (!InSlices(thread.Join, l, out bool cancelled)) Fail(what ?? $"thread '{thread.Name ?? "unnamed"}' to end", l, cancelled);
    }

    /// <summary>Waits for every thread of <paramref name="threads"/> to end, all within one deadline.</summary>
    public static void JoinAll(IEnumerable<Thread> threads, TimeSpan? limit = null)
    {
        TimeSpan l = limit ?? Generous;
        var clock = Stopwatch.StartNew();
        foreach (Thread t in threads)
        {
            TimeSpan left = l - clock.Elapsed;
            Join(t, limit: left > TimeSpan.Zero ? left : TimeSpan.Zero);
        }
    }

    /// <summary>Waits for <paramref name="signal"/> to be set; fails the test, naming <paramref name="what"/>, if it is not in time.</summary>
    public static void Wait(ManualResetEventSlim signal, string what, TimeSpan? limit = null)
    {
        TimeSpan l = limit ?? Generous;
        if (!InSlices(signal.Wait, l, out bool cancelled)) Fail(what, l, cancelled);
    }

    /// <summary>Waits for <paramref name="signal"/> to be set; false if it is not in time (for threads that must not throw).</summary>
    public static bool TryWait(ManualResetEventSlim signal, TimeSpan? limit = null) => InSlices(signal.Wait, limit ?? Generous, out _);

    /// <summary>
    /// <see cref="Barrier.SignalAndWait(TimeSpan)"/> with a deadline: false if the other
    /// participants did not all arrive in time (for threads that must not throw).
    /// </summary>
    public static bool TrySignalAndWait(Barrier barrier, TimeSpan? limit = null) => barrier.SignalAndWait(limit ?? Generous);

    /// <summary>A background thread (it never keeps the test process alive), not started.</summary>
    public static Thread Background(string name, ThreadStart body) => new(body) { IsBackground = true, Name = name };

    /// <summary>Runs <paramref name="body"/> on a new thread and waits for it, rethrowing its failure on this thread.</summary>
    public static void OnOtherThread(Action body, string name = "helper", TimeSpan? limit = null) =>
        TestThread.Start(name, body).Join(limit);
}

/// <summary>
/// A background thread that keeps what it threw (an assertion failing on it would otherwise end
/// the test process), waited for with a deadline, its failure rethrown on the test's thread.
/// </summary>
public sealed class TestThread
{
    private readonly Thread _thread;
    private volatile Exception? _error;

    private TestThread(string name, Action body)
    {
        _thread = Deadlines.Background(name, () =>
        {
            try { body(); }
            catch (Exception e) { _error = e; }
        });
    }

    /// <summary>Starts <paramref name="body"/> on a new background thread named <paramref name="name"/>.</summary>
    public static TestThread Start(string name, Action body)
    {
        var t = new TestThread(name, body);
        t._thread.Start();
        return t;
    }

    /// <summary>Creates all the threads first, then starts them, so none runs alone while the others are being made.</summary>
    public static List<TestThread> StartAll(int count, Func<int, string> name, Action<int> body)
    {
        var threads = Enumerable.Range(0, count).Select(i => new TestThread(name(i), () => body(i))).ToList();
        threads.ForEach(t => t._thread.Start());
        return threads;
    }

    /// <summary>The thread's name.</summary>
    public string Name => _thread.Name ?? "unnamed";

    /// <summary>What the thread threw, if it ended that way.</summary>
    public Exception? Error => _error;

    /// <summary>Whether the thread is still running.</summary>
    public bool IsAlive => _thread.IsAlive;

    /// <summary>
    /// Waits for the thread to end (fails the test, naming <paramref name="what"/> it was to do,
    /// if it does not in time), then rethrows its failure.
    /// </summary>
    public void Join(TimeSpan? limit = null, string? what = null)
    {
        Deadlines.Join(_thread, what ?? $"thread '{Name}' to end", limit);
        if (_error is AssertionException a) throw new AssertionException($"on thread '{Name}': {a.Message}", a);
        if (_error != null) throw new AssertionException($"thread '{Name}' failed: {_error}", _error);
    }

    /// <summary>Waits for every thread, all within one deadline, and rethrows the first failure.</summary>
    public static void JoinAll(IEnumerable<TestThread> threads, TimeSpan? limit = null)
    {
        List<TestThread> list = threads.ToList();
        Deadlines.JoinAll(list.Select(t => t._thread), limit);
        foreach (TestThread t in list) t.Join(TimeSpan.Zero);
    }
}

/// <summary>
/// A safety net for a loop of fixed length (so many rounds, so many operations): the loop checks
/// it as it goes, and the test fails, saying how far the loop got, once the budget is spent or the
/// test's <c>[CancelAfter]</c> time is over. The budget bounds the loop; it never ends it early
/// with a pass, and nothing compares durations.
/// </summary>
public sealed class LoopBudget
{
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly CancellationToken _token = TestContext.CurrentContext.CancellationToken;
    private readonly string _what;
    private readonly TimeSpan _limit;

    /// <summary>A budget of <paramref name="limit"/> for <paramref name="what"/>.</summary>
    public LoopBudget(string what, TimeSpan limit)
    {
        _what = what;
        _limit = limit;
    }

    /// <summary>Time since the loop began (for reports; never for a verdict).</summary>
    public TimeSpan Elapsed => _clock.Elapsed;

    /// <summary>Fails the test if the budget is spent; <paramref name="progress"/> says how far the loop got.</summary>
    public void Check(string progress)
    {
        if (_token.IsCancellationRequested)
            Assert.Fail($"{_what}: the test's [CancelAfter] time ran out after {progress}");
        if (_clock.Elapsed > _limit)
            Assert.Fail($"{_what}: only {progress} within the {_limit.TotalSeconds:0} s safety budget (deadlock, or a machine far slower than any seen)");
    }

    /// <summary><see cref="Check(string)"/> with the progress made only when needed.</summary>
    public void Check(Func<string> progress)
    {
        if (_token.IsCancellationRequested || _clock.Elapsed > _limit) Check(progress());
    }
}
