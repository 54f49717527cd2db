namespace UVm.PageTable;

/// <summary>
/// One node of the radix tree: 512 entries, the child nodes beside them (for levels above 1),
/// a count of present entries, and the node's lock.
/// </summary>
/// <remarks>
/// The lock is not tied to a thread (a cursor may be disposed by another thread than the one
/// that created it) and may be held for long: a cursor keeps it until disposed. Uncontended it
/// is one compare-exchange; contended, waiters sleep on the node's monitor.
/// </remarks>
internal sealed class PtNode
{
    internal readonly ulong[] Ptes = new ulong[Paging.EntriesPerNode];
    internal readonly PtNode?[]? Children;
    internal readonly int Level;
    /// <summary>Present entries in <see cref="Ptes"/>. Changed only under the node's lock.</summary>
    internal int ValidCount;

    private int _locked;
    private int _waiters;

    internal PtNode(int level)
    {
        Level = level;
        if (level > 1) Children = new PtNode?[Paging.EntriesPerNode];
    }

    /// <summary>Bytes of memory one node costs (entries, children, object headers), for statistics.</summary>
    internal static long FootprintBytes(int level) =>
        Paging.EntriesPerNode * 8 + 24 + 48 + (level > 1 ? Paging.EntriesPerNode * 8 + 24 : 0);

    internal bool IsLockedForDebug => Volatile.Read(ref _locked) != 0;

    internal void Lock()
    {
        if (Interlocked.CompareExchange(ref _locked, 1, 0) == 0) return;
        LockSlow();
    }

    private void LockSlow()
    {
        for (int spin = 0; spin < 64; spin++)
        {
            Thread.SpinWait(8);
            if (Volatile.Read(ref _locked) == 0 && Interlocked.CompareExchange(ref _locked, 1, 0) == 0) return;
        }
        lock (this)
        {
            Interlocked.Increment(ref _waiters);
            while (Interlocked.CompareExchange(ref _locked, 1, 0) != 0) Monitor.Wait(this);
            Interlocked.Decrement(ref _waiters);
        }
    }

    /// <summary>
    /// Takes the lock if it is free or freed within a short spin; never sleeps. Returns whether
    /// it was taken. For work that may be skipped, where waiting could deadlock: the holder may
    /// be a long-lived cursor, possibly of the calling thread.
    /// </summary>
    internal bool TryLock()
    {
        if (Interlocked.CompareExchange(ref _locked, 1, 0) == 0) return true;
        for (int spin = 0; spin < 64; spin++)
        {
            Thread.SpinWait(8);
            if (Volatile.Read(ref _locked) == 0 && Interlocked.CompareExchange(ref _locked, 1, 0) == 0) return true;
        }
        return false;
    }

    internal void Unlock()
    {
        Interlocked.Exchange(ref _locked, 0);
        if (Volatile.Read(ref _waiters) != 0)
        {
            lock (this) Monitor.PulseAll(this);
        }
    }

    internal void SetChild(int idx, PtNode child)
    {
        if (!Pte.IsPresent(Ptes[idx])) ValidCount++;
        Ptes[idx] = Pte.Table();
        Children![idx] = child;
    }

    internal void SetLeaf(int idx, ulong pte)
    {
        if (!Pte.IsPresent(Ptes[idx])) ValidCount++;
        Ptes[idx] = pte;
        if (Children != null) Children[idx] = null;
    }

    internal void Clear(int idx)
    {
        if (Pte.IsPresent(Ptes[idx])) ValidCount--;
        Ptes[idx] = 0;
        if (Children != null) Children[idx] = null;
    }
}
