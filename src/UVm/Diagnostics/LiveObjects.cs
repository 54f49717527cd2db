using System.Runtime.CompilerServices;
using UVm.Areas;
using UVm.Frames;
using UVm.Host;
using UVm.Spaces;

namespace UVm.Diagnostics;

/// <summary>
/// The weak registry of live spaces and pools that the observable instruments of
/// <see cref="UVmMetrics"/> read. Nothing here runs on a hot path: spaces and pools are registered
/// once when created and retired once when disposed (through the hooks <see cref="FramePool"/> and
/// <see cref="VmSpace"/> offer, set when the library loads, so no layer calls up into this one);
/// instruments read the counters the objects already keep, when a listener asks.
/// </summary>
/// <remarks>
/// <para>Weak: the registry never keeps a space or pool alive (a <see cref="ConditionalWeakTable{TKey, TValue}"/>).</para>
/// <para>Monotonic: when a space or pool is disposed, its final counts are folded into retired
/// totals (a disposed space's entry stays, marked, until the space is collected), so the
/// counters UVm publishes never go down. A space that is dropped without being
/// disposed (a leak: its arena stays reserved) takes its counts with it when collected.</para>
/// <para>Thread-safe: registration, retirement and reading take one lock, so a count is never
/// seen both live and retired.</para>
/// </remarks>
internal static class LiveObjects
{
    /// <summary>What the registry knows of one live space.</summary>
    internal sealed class SpaceEntry
    {
        internal SpaceEntry(long id) => Id = id;

        /// <summary>The number tagging this space's per-space measurements.</summary>
        internal long Id { get; }

        /// <summary>The fault statistics of the <see cref="AddressSpace"/> that owned the space, captured when it was disposed.</summary>
        internal AreaStats? Areas { get; set; }

        /// <summary>Whether the space was disposed and its counts folded into the retired totals.</summary>
        internal bool Retired { get; set; }
    }

    private static readonly object s_lock = new();
    private static readonly ConditionalWeakTable<VmSpace, SpaceEntry> s_spaces = new();
    private static readonly ConditionalWeakTable<FramePool, object> s_pools = new();

    // Final counts of disposed spaces and pools (under s_lock).
    private static PageFaultCounts s_retiredFaults;
    private static long s_retiredMmap, s_retiredMprotect, s_retiredFallocate, s_retiredFramesAllocated;

    /// <summary>Subscribes to the lifecycle hooks of pools and spaces before the library's first use.</summary>
#pragma warning disable CA2255 // a library's module initializer, on purpose: the books must see the first pool and space
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void Subscribe()
    {
        FramePool.Created += Register;
        FramePool.Disposed += Retire;
        VmSpace.Created += Register;
        VmSpace.Disposed += Retire;
    }

    /// <summary>Records a new space. Called once, from its constructor.</summary>
    internal static void Register(VmSpace space)
    {
        UVmMetrics.EnsureCreated();
        lock (s_lock) s_spaces.AddOrUpdate(space, new SpaceEntry(space.Id));
    }

    /// <summary>The fault statistics of the address space that manages (or managed) <paramref name="space"/>, if any.</summary>
    internal static AreaStats? AreasOf(VmSpace space) => EntryOf(space)?.Areas ?? AddressSpace.StatsOf(space);

    /// <summary>Records a new pool. Called once, from its constructor.</summary>
    internal static void Register(FramePool pool)
    {
        UVmMetrics.EnsureCreated();
        lock (s_lock) s_pools.AddOrUpdate(pool, pool);
    }

    /// <summary>Folds a disposed space's counts into the retired totals and forgets it.</summary>
    internal static void Retire(VmSpace space)
    {
        lock (s_lock)
        {
            // The entry stays (weakly) so the space's own statistics still name its fault kinds.
            if (!s_spaces.TryGetValue(space, out SpaceEntry? entry) || entry.Retired) return;
            entry.Areas ??= AddressSpace.StatsOf(space); // its address space is still attached while the space is disposed
            s_retiredFaults += PageFaultCounts.Of(space, entry.Areas);
            s_retiredMmap += space.HostStats.MmapCalls;
            s_retiredMprotect += space.HostStats.MprotectCalls;
            entry.Retired = true;
        }
    }

    /// <summary>Folds a disposed pool's counts into the retired totals and forgets it.</summary>
    internal static void Retire(FramePool pool)
    {
        lock (s_lock)
        {
            if (!s_pools.TryGetValue(pool, out _)) return;
            s_retiredFallocate += pool.PunchCalls;
            s_retiredFramesAllocated += pool.FramesAllocatedTotal;
            s_pools.Remove(pool);
        }
    }

    /// <summary>The registry entry of <paramref name="space"/> (also after it was disposed).</summary>
    internal static SpaceEntry? EntryOf(VmSpace space)
    {
        lock (s_lock) return s_spaces.TryGetValue(space, out SpaceEntry? entry) ? entry : null;
    }

    /// <summary>Faults by kind over every space since the process started.</summary>
    internal static PageFaultCounts Faults()
    {
        lock (s_lock)
        {
            PageFaultCounts sum = s_retiredFaults;
            foreach (KeyValuePair<VmSpace, SpaceEntry> pair in s_spaces)
                if (!pair.Value.Retired) sum += PageFaultCounts.Of(pair.Key, AddressSpace.StatsOf(pair.Key));
            return sum;
        }
    }

    /// <summary>Host syscalls that changed arenas or pools since the process started.</summary>
    internal static (long Mmap, long Mprotect, long Fallocate) HostSyscalls()
    {
        lock (s_lock)
        {
            long mmap = s_retiredMmap, mprotect = s_retiredMprotect, fallocate = s_retiredFallocate;
            foreach (KeyValuePair<VmSpace, SpaceEntry> pair in s_spaces)
            {
                if (pair.Value.Retired) continue;
                HostStats stats = pair.Key.HostStats;
                mmap += stats.MmapCalls;
                mprotect += stats.MprotectCalls;
            }
            foreach (KeyValuePair<FramePool, object> pair in s_pools) fallocate += pair.Key.PunchCalls;
            return (mmap, mprotect, fallocate);
        }
    }

    /// <summary>Frames handed out since the process started, and frames in use now, over every pool.</summary>
    internal static (long Allocated, long InUse) Frames()
    {
        lock (s_lock)
        {
            long allocated = s_retiredFramesAllocated, inUse = 0;
            foreach (KeyValuePair<FramePool, object> pair in s_pools)
            {
                allocated += pair.Key.FramesAllocatedTotal;
                inUse += pair.Key.FramesInUse;
            }
            return (allocated, inUse);
        }
    }

    /// <summary>Each live space's id and the upper bound UVm keeps on its host mappings.</summary>
    internal static List<(long Id, long HostMappings)> HostMappings()
    {
        var result = new List<(long, long)>();
        lock (s_lock)
        {
            foreach (KeyValuePair<VmSpace, SpaceEntry> pair in s_spaces)
                if (!pair.Value.Retired) result.Add((pair.Value.Id, pair.Key.Budget.Bound));
        }
        return result;
    }

    /// <summary>Spaces created and not yet disposed (nor collected).</summary>
    internal static long LiveSpaces()
    {
        long n = 0;
        lock (s_lock)
        {
            foreach (KeyValuePair<VmSpace, SpaceEntry> pair in s_spaces)
                if (!pair.Value.Retired) n++;
        }
        return n;
    }
}
