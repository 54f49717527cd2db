namespace UVm.Host;

/// <summary>
/// Keeps host mappings (VMAs) under two limits: one space's own, and the process's, shared by
/// the arenas of every live space, so that UVm refuses with <see cref="UVmError.HostMappingLimit"/>
/// before the kernel's <c>vm.max_map_count</c> (a limit per process) makes an <c>mmap</c> or
/// <c>mprotect</c> fail half-way, in UVm or, worse, in the runtime's own allocations.
/// </summary>
/// <remarks>
/// <para>Every host operation covers one contiguous range and can add at most two mappings (it
/// may split the mappings at both of its ends; what it covers becomes one). Each budget keeps
/// an upper bound: the last exact count plus two per operation applied since; the process keeps
/// the sum of the live spaces' bounds. Only when an operation might not fit does it count
/// exactly, every live arena at once from one read of <c>/proc/self/maps</c>, and refuse if it
/// really does not fit. Callers ask before they change the page table, so a refusal leaves page
/// table and host as they were.</para>
/// <para>Thread-safe. Operations of other threads that reach the host while a recount reads the
/// maps may be missed by it (a few mappings per thread); the quarter of <c>vm.max_map_count</c>
/// that <see cref="DefaultLimit"/> leaves to the rest of the process absorbs that.</para>
/// </remarks>
internal sealed class HostMappingBudget
{
    private static readonly object s_lock = new();
    private static readonly List<HostMappingBudget> s_live = new(); // under s_lock
    private static long s_processBound;

    private readonly ulong _start, _end;
    private long _bound;
    private bool _retired; // under s_lock

    internal HostMappingBudget(nint arenaBase, ulong size, int limit)
    {
        _start = (ulong)arenaBase;
        _end = _start + size;
        Limit = limit;
        _bound = 1; // a fresh arena is one reserved mapping
        lock (s_lock)
        {
            s_live.Add(this);
            Interlocked.Add(ref s_processBound, _bound);
        }
    }

    /// <summary>The most host mappings every space's arenas together may have: three quarters of <c>vm.max_map_count</c>.</summary>
    /// <remarks>Settable for tests that exercise the process-wide refusal with small numbers.</remarks>
    internal static int ProcessLimit { get; set; } = DefaultLimit();

    /// <summary>The upper bound kept on the live arenas' mappings, all spaces together.</summary>
    internal static long ProcessBound => Volatile.Read(ref s_processBound);

    /// <summary>The most host mappings the space may have.</summary>
    internal int Limit { get; }

    /// <summary>The upper bound kept on the arena's host mappings (for UVm's metrics).</summary>
    internal long Bound => Volatile.Read(ref _bound);

    /// <summary>Host mappings of the arena, counted now.</summary>
    internal int CountExactly() => ProcMaps.Read(_start, _end).Count;

    /// <summary>Whether <paramref name="pending"/> queued operations plus one more fit by the kept bounds alone (no syscall).</summary>
    internal bool SurelyFits(int pending)
    {
        long need = 2L * (pending + 1);
        return Volatile.Read(ref _bound) + need <= Limit && Volatile.Read(ref s_processBound) + need <= ProcessLimit;
    }

    /// <summary>
    /// Ensures that <paramref name="pending"/> operations already queued plus one more can be
    /// applied without passing the space's or the process's limit.
    /// </summary>
    /// <exception cref="UVmException"><see cref="UVmError.HostMappingLimit"/> when they cannot.</exception>
    internal void EnsureRoom(int pending)
    {
        if (SurelyFits(pending)) return;
        long need = 2L * (pending + 1);
        lock (s_lock)
        {
            (int own, long all) = RecountLocked();
            if (own + need > Limit)
                ThrowHelper.UVm(UVmError.HostMappingLimit,
                    $"the space has {own} host mappings and its budget is {Limit}; contiguous mappings (in guest and frame address, same rights) share one");
            if (all + need > ProcessLimit)
                ThrowHelper.UVm(UVmError.HostMappingLimit,
                    $"the process's spaces have {all} host mappings and their budget is {ProcessLimit} (three quarters of vm.max_map_count); contiguous mappings share one");
        }
    }

    /// <summary>
    /// Ensures that returning guest range <c>[start, end)</c> to the reserved state, after
    /// <paramref name="pending"/> queued operations, stays within both limits, counting exactly:
    /// the mappings inside the range go, those across its ends keep their outside parts, and
    /// the range itself becomes at most one. Used when the bounds alone (two more per
    /// operation) would refuse an unmap that in fact removes mappings.
    /// </summary>
    /// <exception cref="UVmException"><see cref="UVmError.HostMappingLimit"/> when it does not fit.</exception>
    internal void EnsureRoomToReset(ulong start, ulong end, int pending)
    {
        lock (s_lock)
        {
            List<HostVma> vmas = ProcMaps.Read(_start, _end);
            (_, long all) = RecountLocked();
            ulong a = _start + start, b = _start + end;
            int inside = 0;
            bool left = false, right = false;
            foreach (HostVma v in vmas)
            {
                if (v.End <= a || v.Start >= b) continue;
                inside++;
                left |= v.Start < a;
                right |= v.End > b;
            }
            long change = (left ? 1 : 0) + (right ? 1 : 0) + 1 - inside;
            long after = vmas.Count + change;
            if (after + 2L * pending > Limit)
                ThrowHelper.UVm(UVmError.HostMappingLimit,
                    $"unmapping [0x{start:x}, 0x{end:x}) would leave the space {after} host mappings and its budget is {Limit}");
            if (all + change + 2L * pending > ProcessLimit)
                ThrowHelper.UVm(UVmError.HostMappingLimit,
                    $"unmapping [0x{start:x}, 0x{end:x}) would leave the process's spaces {all + change} host mappings and their budget is {ProcessLimit}");
        }
    }

    /// <summary>Records that <paramref name="applied"/> operations reached the host.</summary>
    internal void Applied(int applied)
    {
        if (applied == 0) return;
        Interlocked.Add(ref _bound, 2L * applied);
        Interlocked.Add(ref s_processBound, 2L * applied);
    }

    /// <summary>Takes the space's mappings out of the process's count: its arena is gone. Idempotent.</summary>
    internal void Retire()
    {
        lock (s_lock)
        {
            if (_retired) return;
            _retired = true;
            s_live.Remove(this);
            Interlocked.Add(ref s_processBound, -Volatile.Read(ref _bound));
        }
    }

    /// <summary>
    /// Counts every live arena's mappings from one read of the maps, resets every bound to its
    /// count, and returns this space's count and the process's total.
    /// </summary>
    private (int Own, long All) RecountLocked()
    {
        var arenas = new List<HostMappingBudget>(s_live);
        arenas.Sort((x, y) => x._start.CompareTo(y._start));
        var counts = new int[arenas.Count];
        foreach (HostVma v in ProcMaps.Read(arenas.Count > 0 ? arenas[0]._start : 0, ulong.MaxValue))
        {
            // Arenas never overlap: the last one starting before the mapping's end is the only candidate.
            int lo = 0, hi = arenas.Count - 1, found = -1;
            while (lo <= hi)
            {
                int mid = (lo + hi) >> 1;
                if (arenas[mid]._start < v.End) { found = mid; lo = mid + 1; }
                else hi = mid - 1;
            }
            if (found >= 0 && arenas[found]._end > v.Start) counts[found]++;
        }
        long all = 0;
        int own = 0;
        for (int i = 0; i < arenas.Count; i++)
        {
            Interlocked.Exchange(ref arenas[i]._bound, counts[i]);
            all += counts[i];
            if (ReferenceEquals(arenas[i], this)) own = counts[i];
        }
        Interlocked.Exchange(ref s_processBound, all);
        return (own, all);
    }

    /// <summary>Three quarters of the kernel's <c>vm.max_map_count</c> (65,530 when unreadable): the rest is left to the runtime and libraries.</summary>
    internal static int DefaultLimit()
    {
        try
        {
            return int.Parse(File.ReadAllText("/proc/sys/vm/max_map_count").Trim()) / 4 * 3;
        }
        catch (Exception e) when (e is IOException or FormatException or UnauthorizedAccessException)
        {
            return 65530 / 4 * 3;
        }
    }
}
