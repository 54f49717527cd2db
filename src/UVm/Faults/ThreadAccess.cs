using System.Runtime.CompilerServices;

namespace UVm.Faults;

/// <summary>
/// One thread's access state (not a thread: the state of one): the space activated on the
/// thread (what its readers and writers may act on), the space an access of it is inside right
/// now, the spaces it is resolving a fault of, and the bytes its copies and fills have moved (for
/// UVm's metrics). One object per thread, written only by that thread; fallible readers and
/// writers keep a reference to their thread's, so the hot path touches neither thread-local
/// storage nor a shared cache line.
/// </summary>
/// <remarks>
/// Objects of ended threads are dropped from the registry (their bytes folded into a retired
/// total) when it has doubled since the last sweep, so it stays as long as the number of live
/// threads that access guest memory, not the number of threads ever started.
/// </remarks>
internal sealed class ThreadAccess
{
    [ThreadStatic] private static ThreadAccess? t_current;

    private static readonly object s_lock = new();
    private static ThreadAccess[] s_all = [];   // replaced whole under s_lock, read without it
    private static long s_retiredBytes;
    private static int s_sweepAt = 64;

    private readonly Thread _owner = Thread.CurrentThread;
    private long _spaceId;   // the space an access of this thread is inside, 0 when none
    private long _bytes;
    private readonly long[] _resolving = new long[MaxNestedResolutions]; // spaces this thread is resolving a fault of, outermost first
    private int _resolvingDepth;

    /// <summary>
    /// How deep resolutions may nest on one thread: a handler of one space may touch another
    /// space's memory, whose handler may touch a third's, and so on; never the same space twice.
    /// </summary>
    internal const int MaxNestedResolutions = 8;

    private ThreadAccess() { }

    /// <summary>The space activated on this thread (see <c>VmSpace.Activate</c>), if any. Only this thread uses it.</summary>
    internal IFaultResolver? Active;

    /// <summary>
    /// The number of the innermost activation scope open on this thread (<c>VmActivation</c>),
    /// 0 when none. Open scopes form a stack whose numbers grow towards the top, so a scope whose
    /// number is above this one is closed. Only this thread uses it.
    /// </summary>
    internal long ActivationScope;

    /// <summary>The last scope number handed out on this thread (numbers are never reused). Only this thread uses it.</summary>
    internal long ActivationsIssued;

    /// <summary>The calling thread's object.</summary>
    internal static ThreadAccess Current => t_current ?? Register();

    /// <summary>
    /// Marks the thread inside an access of space <paramref name="spaceId"/>; <paramref name="outer"/>
    /// gets what to restore on leaving (accesses nest when a handler accesses guest memory).
    /// Called through <see cref="GateScope"/>, which pairs it with <see cref="Leave"/> and keeps
    /// <paramref name="outer"/> in its own field: written there directly, it is stored once on
    /// the fast path, not as a return value and again as the field.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void Enter(long spaceId, out long outer)
    {
        outer = _spaceId;
        Volatile.Write(ref _spaceId, spaceId);
    }

    /// <summary>Ends the access <see cref="Enter"/> began.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void Leave(long outer) => Volatile.Write(ref _spaceId, outer);

    /// <summary>
    /// Marks this thread as resolving a fault of space <paramref name="spaceId"/>; false (nothing
    /// marked) when it already is, or when resolutions nest <see cref="MaxNestedResolutions"/>
    /// deep: resolution is not re-entrant for one thread and space.
    /// </summary>
    internal bool EnterResolution(long spaceId)
    {
        int depth = _resolvingDepth;
        if (depth == _resolving.Length) return false;
        for (int i = 0; i < depth; i++)
            if (_resolving[i] == spaceId) return false;
        _resolving[depth] = spaceId;
        _resolvingDepth = depth + 1;
        return true;
    }

    /// <summary>Ends the resolution <see cref="EnterResolution"/> began.</summary>
    internal void LeaveResolution() => _resolving[--_resolvingDepth] = 0;

    /// <summary>Counts <paramref name="bytes"/> moved by this thread.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void CountBytes(ulong bytes) => Volatile.Write(ref _bytes, _bytes + (long)bytes); // single writer

    /// <summary>Bytes moved by the fallible copies and fills of every thread since the process started.</summary>
    internal static long TotalBytes()
    {
        lock (s_lock)
        {
            long sum = s_retiredBytes;
            foreach (ThreadAccess t in s_all) sum += Volatile.Read(ref t._bytes);
            return sum;
        }
    }

    /// <summary>Spins until no thread other than the caller is inside an access of <paramref name="spaceId"/>.</summary>
    internal static void WaitWhileInside(long spaceId)
    {
        ThreadAccess? self = t_current;
        foreach (ThreadAccess t in Volatile.Read(ref s_all))
        {
            if (ReferenceEquals(t, self)) continue;
            var spin = new SpinWait();
            while (Volatile.Read(ref t._spaceId) == spaceId) spin.SpinOnce();
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static ThreadAccess Register()
    {
        var t = new ThreadAccess();
        lock (s_lock)
        {
            var all = new List<ThreadAccess>(s_all.Length + 1);
            foreach (ThreadAccess other in s_all)
            {
                if (s_all.Length >= s_sweepAt && !other._owner.IsAlive) s_retiredBytes += Volatile.Read(ref other._bytes);
                else all.Add(other);
            }
            if (s_all.Length >= s_sweepAt) s_sweepAt = Math.Max(64, 2 * all.Count);
            all.Add(t);
            Volatile.Write(ref s_all, all.ToArray());
        }
        t_current = t;
        return t;
    }
}
