namespace UVm.Host;

/// <summary>
/// Keeps one space's host mappings (VMAs) under a limit, so that UVm refuses with
/// <see cref="UVmError.HostMappingLimit"/> before the kernel's <c>vm.max_map_count</c> makes an
/// <c>mmap</c> or <c>mprotect</c> fail half-way.
/// </summary>
/// <remarks>
/// Every host operation covers one contiguous range and can add at most two mappings (it may
/// split the mappings at both of its ends; what it covers becomes one). The budget keeps an
/// upper bound: the last exact count plus two per operation applied since. Only when an
/// operation might not fit does it count exactly, from <c>/proc/self/maps</c>, and refuse if it
/// really does not fit. Callers ask before they change the page table, so a refusal leaves
/// page table and host as they were. Thread-safe.
/// </remarks>
internal sealed class HostMappingBudget
{
    private readonly ulong _start, _end;
    private long _bound;

    internal HostMappingBudget(nint arenaBase, ulong size, int limit)
    {
        _start = (ulong)arenaBase;
        _end = _start + size;
        Limit = limit;
        _bound = 1; // a fresh arena is one reserved mapping
    }

    /// <summary>The most host mappings the space may have.</summary>
    internal int Limit { get; }

    /// <summary>The upper bound kept on the arena's host mappings (read by <see cref="Diagnostics.UVmMetrics"/>).</summary>
    internal long Bound => Interlocked.Read(ref _bound);

    /// <summary>Host mappings of the arena, counted now.</summary>
    internal int CountExactly() => ProcMaps.Read(_start, _end).Count;

    /// <summary>
    /// Ensures that <paramref name="pending"/> operations already queued plus one more can be
    /// applied without passing the limit.
    /// </summary>
    /// <exception cref="UVmException"><see cref="UVmError.HostMappingLimit"/> when they cannot.</exception>
    internal void EnsureRoom(int pending)
    {
        long need = 2L * (pending + 1);
        if (Interlocked.Read(ref _bound) + need <= Limit) return;
        int exact = CountExactly();
        Interlocked.Exchange(ref _bound, exact);
        if (exact + need > Limit)
            ThrowHelper.UVm(UVmError.HostMappingLimit,
                $"the space has {exact} host mappings and its budget is {Limit}; contiguous mappings (in guest and frame address, same rights) share one");
    }

    /// <summary>Whether <paramref name="pending"/> queued operations plus one more fit by the kept bound alone (no syscall).</summary>
    internal bool SurelyFits(int pending) => Interlocked.Read(ref _bound) + 2L * (pending + 1) <= Limit;

    /// <summary>
    /// Ensures that returning guest range <c>[start, end)</c> to the reserved state, after
    /// <paramref name="pending"/> queued operations, stays within the limit, counting exactly:
    /// the mappings inside the range go, those across its ends keep their outside parts, and
    /// the range itself becomes at most one. Used when the bound alone (two more per operation)
    /// would refuse an unmap that in fact removes mappings.
    /// </summary>
    /// <exception cref="UVmException"><see cref="UVmError.HostMappingLimit"/> when it does not fit.</exception>
    internal void EnsureRoomToReset(ulong start, ulong end, int pending)
    {
        List<HostVma> vmas = ProcMaps.Read(_start, _end);
        Interlocked.Exchange(ref _bound, vmas.Count);
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
        long after = vmas.Count - inside + (left ? 1 : 0) + (right ? 1 : 0) + 1;
        if (after + 2L * pending > Limit)
            ThrowHelper.UVm(UVmError.HostMappingLimit,
                $"unmapping [0x{start:x}, 0x{end:x}) would leave the space {after} host mappings and its budget is {Limit}");
    }

    /// <summary>Records that <paramref name="applied"/> operations reached the host.</summary>
    internal void Applied(int applied) => Interlocked.Add(ref _bound, 2L * applied);

    /// <summary>The default budget: three quarters of the kernel's <c>vm.max_map_count</c> (65,530 when unreadable).</summary>
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
