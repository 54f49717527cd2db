using NUnit.Framework;
using UVm.Frames;
using UVm.Spaces;
using UVm.Tests.Reliability;

namespace UVm.Tests.Properties;

/// <summary>
/// "No leak, no change" after a case: the space's page table (every mapped slot: range, frame,
/// rights) as it was, the pool's frames in use and chunk reservations as they were, no cursor
/// left alive on the thread, and, every <c>mirrorEvery</c> checks (reading
/// <c>/proc/self/maps</c> costs a millisecond or so), the host mirroring the table.
/// </summary>
public sealed class SpaceWatch
{
    private readonly VmSpace _space;
    private readonly int _mirrorEvery;
    private List<MappedSlot> _slots = new();
    private long _frames, _reserved;
    private int _checks;

    public SpaceWatch(VmSpace space, int mirrorEvery = 64)
    {
        _space = space;
        _mirrorEvery = mirrorEvery;
        Rebase();
    }

    /// <summary>The slots captured last: the space's state every case must leave.</summary>
    public IReadOnlyList<MappedSlot> Slots => _slots;

    /// <summary>Captures the current state as the one to keep (after a case changed it on purpose and the fixture rebuilt it).</summary>
    public void Rebase()
    {
        _slots = Harness.MappedSlots(_space);
        _frames = _space.Pool.FramesInUse;
        _reserved = _space.Pool.ReservedChunks;
        Assert.That(Harness.MirrorDiffs(_space), Is.Empty, "the host does not mirror the page table to begin with");
    }

    /// <summary>
    /// Asserts that the case <paramref name="call"/> left everything as captured; up to
    /// <paramref name="reservationsKept"/> more chunk reservations are allowed (regions whose
    /// reservation stays while an area still lies in them).
    /// </summary>
    public void AssertUnchanged(string call, bool checkMirrorNow = false, int reservationsKept = 0)
    {
        if (Cursor.HeldByCurrentThread != 0) throw new AssertionException($"{call}: left {Cursor.HeldByCurrentThread} cursor(s) alive on the thread");
        List<MappedSlot> now = Harness.MappedSlots(_space);
        if (!now.SequenceEqual(_slots))
            throw new AssertionException($"{call}: changed the page table.{Environment.NewLine}  before: {Show(_slots)}{Environment.NewLine}  after:  {Show(now)}");
        long frames = _space.Pool.FramesInUse;
        if (frames != _frames) throw new AssertionException($"{call}: frames in use went from {_frames} to {frames}");
        long reserved = _space.Pool.ReservedChunks;
        if (reserved < _reserved || reserved > _reserved + reservationsKept)
            throw new AssertionException($"{call}: reserved chunks went from {_reserved} to {reserved}{(reservationsKept > 0 ? $" ({reservationsKept} may stay, for regions still holding an area)" : "")}");
        if (checkMirrorNow || ++_checks % _mirrorEvery == 0) AssertMirror(_space, call);
    }

    /// <summary>Asserts that the host mirrors <paramref name="space"/>'s page table.</summary>
    public static void AssertMirror(VmSpace space, string call)
    {
        var diffs = Harness.MirrorDiffs(space);
        if (diffs.Count > 0) throw new AssertionException($"{call}: the host no longer mirrors the page table:{Environment.NewLine}  {string.Join(Environment.NewLine + "  ", diffs)}");
    }

    private static string Show(List<MappedSlot> slots) => slots.Count == 0 ? "(nothing mapped)" : string.Join(", ", slots);
}

/// <summary>The pool side alone: frames in use and chunk reservations as they were.</summary>
public readonly record struct PoolState(long FramesInUse, long ReservedChunks)
{
    public static PoolState Of(FramePool pool) => new(pool.FramesInUse, pool.ReservedChunks);

    public void AssertSame(FramePool pool, string call)
    {
        var now = Of(pool);
        if (now != this) throw new AssertionException($"{call}: the pool leaked or lost frames: before {this}, after {now}");
    }
}

/// <summary>
/// Runs two actions against each other: one on a long-lived helper thread, one on the caller's,
/// the second started a given number of microseconds after the first one began (busy-waited,
/// both released by one flag once both threads are running). Ordering by "after the other
/// began" rather than by two independent delays keeps the interleavings spread on a loaded
/// machine, where a thread may wait for a core longer than any delay.
/// Bounded: a race that does not end within its deadline fails (a deadlock is a finding), and
/// the helper thread is then given up (it is a background thread) and a new one made.
/// </summary>
public sealed class Racer : IDisposable
{
    private const int StartWaitMs = 1000; // how long one side waits for the other to begin before going anyway
    private Worker _worker = new();

    /// <summary>
    /// Races <paramref name="onHelper"/> against <paramref name="onCaller"/>: with
    /// <paramref name="offsetUs"/> ≥ 0 the caller's action starts that long after the helper's
    /// began (and, with <paramref name="callerWhen"/>, not before it holds, for up to a second:
    /// "after the operation's second fault"); with a negative offset the helper's starts that
    /// long after the caller's. Exceptions of either (assertions included) are rethrown here
    /// after both ended.
    /// </summary>
    public void Race(Action onHelper, Action onCaller, int offsetUs, string what, Func<bool>? callerWhen = null, int deadlineMs = 15_000)
    {
        Worker w = _worker;
        Exception? callerError = null;
        var flags = new StartFlags();
        w.Start(onHelper, offsetUs < 0 ? -offsetUs : 0, offsetUs < 0 ? flags : null, flags);
        if (!w.WaitReady(deadlineMs))
        {
            w.Abandon();
            _worker = new Worker();
            throw new AssertionException($"{what}: the helper thread did not start within {deadlineMs} ms");
        }
        w.Go();
        if (offsetUs >= 0)
        {
            WaitFor(() => flags.HelperBegan);
            if (callerWhen != null) WaitFor(() => flags.HelperEnded || callerWhen());
            BusyWait(offsetUs);
        }
        flags.CallerBegan = true;
        try
        {
            onCaller();
        }
        catch (Exception e)
        {
            callerError = e;
        }
        if (!w.WaitDone(deadlineMs))
        {
            _worker = new Worker(); // the stuck one stays blocked; it is a background thread
            throw new AssertionException($"{what}: the racing call on the helper thread did not end within {deadlineMs} ms (a deadlock?)");
        }
        if (callerError != null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(callerError).Throw();
        if (w.Error != null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(w.Error).Throw();
    }

    public void Dispose() => _worker.Stop();

    /// <summary>Waits <paramref name="us"/> microseconds without giving up the core.</summary>
    internal static void BusyWait(int us)
    {
        if (us <= 0) return;
        long until = System.Diagnostics.Stopwatch.GetTimestamp() + us * System.Diagnostics.Stopwatch.Frequency / 1_000_000;
        while (System.Diagnostics.Stopwatch.GetTimestamp() < until) Thread.SpinWait(4);
    }

    /// <summary>Spins until <paramref name="condition"/> holds, for at most <see cref="StartWaitMs"/> (then goes on regardless).</summary>
    private static void WaitFor(Func<bool> condition)
    {
        long until = System.Diagnostics.Stopwatch.GetTimestamp() + StartWaitMs * System.Diagnostics.Stopwatch.Frequency / 1000;
        while (!condition() && System.Diagnostics.Stopwatch.GetTimestamp() < until) Thread.SpinWait(4);
    }

    private sealed class StartFlags
    {
        internal volatile bool HelperBegan, HelperEnded, CallerBegan;
    }

    private sealed class Worker
    {
        private readonly Thread _thread;
        private readonly SemaphoreSlim _work = new(0), _ready = new(0), _done = new(0);
        private Action? _action;
        private int _delayUs;
        private StartFlags? _after, _flags;
        private volatile bool _go, _stop;

        internal Exception? Error { get; private set; }

        internal Worker()
        {
            _thread = new Thread(Loop) { IsBackground = true, Name = "property racer" };
            _thread.Start();
        }

        internal void Start(Action action, int delayUs, StartFlags? afterCaller, StartFlags flags)
        {
            _action = action;
            _delayUs = delayUs;
            _after = afterCaller;
            _flags = flags;
            _go = false;
            Error = null;
            _work.Release();
        }

        internal bool WaitReady(int ms) => _ready.Wait(ms);
        internal void Go() => _go = true;
        internal bool WaitDone(int ms) => _done.Wait(ms);

        /// <summary>Lets a worker that started too late run nothing and end.</summary>
        internal void Abandon()
        {
            _action = static () => { };
            _stop = true;
            _go = true;
        }

        internal void Stop()
        {
            _stop = true;
            _work.Release();
        }

        private void Loop()
        {
            while (true)
            {
                _work.Wait();
                if (_stop) return;
                _ready.Release();
                // Busy, not yielding, for up to a second (both racers should be on a core when released), then politely.
                long until = System.Diagnostics.Stopwatch.GetTimestamp() + System.Diagnostics.Stopwatch.Frequency;
                while (!_go)
                {
                    if (System.Diagnostics.Stopwatch.GetTimestamp() < until) Thread.SpinWait(4);
                    else Thread.Sleep(1);
                }
                if (_after is { } after) WaitFor(() => after.CallerBegan);
                BusyWait(_delayUs);
                _flags!.HelperBegan = true;
                try
                {
                    _action!();
                }
                catch (Exception e)
                {
                    Error = e;
                }
                _flags.HelperEnded = true;
                _done.Release();
                if (_stop) return;
            }
        }
    }
}

/// <summary>Describes race offsets in messages.</summary>
public static class Racing
{
    /// <summary>"n µs after the operation began" or "n µs before it".</summary>
    public static string Offset(int us) => us >= 0 ? $"{us} µs after the operation began" : $"{-us} µs before it";
}
