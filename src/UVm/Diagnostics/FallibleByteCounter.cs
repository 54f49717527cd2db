using System.Runtime.CompilerServices;

namespace UVm.Diagnostics;

/// <summary>
/// Bytes moved by fallible copies and zero fills, counted per thread so that the copy path never
/// touches a shared cache line: each thread adds to a counter object of its own (registered once,
/// on the thread's first fallible copy), and the instrument sums them when a listener asks.
/// </summary>
/// <remarks>
/// Only the owning thread writes a counter; other threads read it whole (an aligned 64-bit
/// value). Counters of threads that have ended are folded into a retired total, when read and
/// when the list has doubled since the last sweep, so the list stays as long as the number of
/// live threads that copy, not the number of threads ever started.
/// </remarks>
internal static class FallibleByteCounter
{
    private sealed class Counter
    {
        internal long Bytes;
        internal readonly Thread Owner = Thread.CurrentThread;
    }

    [ThreadStatic] private static Counter? t_counter;

    private static readonly List<Counter> s_counters = new();
    private static long s_retired;
    private static int s_sweepAt = 64;

    /// <summary>Counts <paramref name="bytes"/> moved by the calling thread.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Add(ulong bytes)
    {
        Counter c = t_counter ?? Register();
        // Single writer: a plain add, published whole for readers on other threads.
        Volatile.Write(ref c.Bytes, c.Bytes + (long)bytes);
    }

    /// <summary>Bytes counted by every thread since the process started.</summary>
    internal static long Total()
    {
        lock (s_counters)
        {
            SweepLocked();
            long sum = s_retired;
            foreach (Counter c in s_counters) sum += Volatile.Read(ref c.Bytes);
            return sum;
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static Counter Register()
    {
        var c = new Counter();
        lock (s_counters)
        {
            if (s_counters.Count >= s_sweepAt)
            {
                SweepLocked();
                s_sweepAt = Math.Max(64, 2 * s_counters.Count);
            }
            s_counters.Add(c);
        }
        t_counter = c;
        return c;
    }

    /// <summary>Folds the counters of ended threads into <see cref="s_retired"/>.</summary>
    private static void SweepLocked()
    {
        for (int i = s_counters.Count - 1; i >= 0; i--)
        {
            Counter c = s_counters[i];
            if (c.Owner.IsAlive) continue;
            s_retired += Volatile.Read(ref c.Bytes);
            s_counters.RemoveAt(i);
        }
    }
}
