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
    private int _owner; // managed id of the thread that took the lock, 0 when free

    internal PtNode(int level)
    {
        Level = level;
        if (level > 1) Children = new PtNode?[Paging.EntriesPerNode];
    }

    /// <summary>Bytes of memory one node costs (entries, children, object headers), for statistics.</summary>
    internal static long FootprintBytes(int level) =>
        Paging.EntriesPerNode * 8 + 24 + 48 + (level > 1 ? Paging.EntriesPerNode * 8 + 24 : 0);

    internal bool IsLockedForDebug => Volatile.Read(ref _locked) != 0;

    /// <summary>Threads sleeping for the lock now (for tests that must know a cursor really waits).</summary>
    internal int WaitersForDebug => Volatile.Read(ref _waiters);

    /// <summary>Takes the lock, waiting for its holder.</summary>
    /// <exception cref="InvalidOperationException">The calling thread took it (through a cursor it
    /// holds): waiting would wait on itself forever. Nothing is taken.</exception>
    internal void Lock()
    {
        if (Interlocked.CompareExchange(ref _locked, 1, 0) == 0)
        {
            _owner = Environment.CurrentManagedThreadId;
            return;
        }
        LockSlow();
    }

    private void LockSlow()
    {
        // The owner is written after the lock is taken and cleared before it is let go, so a
        // thread that reads its own id here holds the lock now.
        if (Volatile.Read(ref _owner) == Environment.CurrentManagedThreadId)
            throw new InvalidOperationException(
                "the calling thread holds a cursor of this space whose part of the page table this one needs: it would wait on itself forever (dispose that cursor first)");
        for (int spin = 0; spin < 64; spin++)
        {
            Thread.SpinWait(8);
            if (Volatile.Read(ref _locked) == 0 && Interlocked.CompareExchange(ref _locked, 1, 0) == 0)
            {
                _owner = Environment.CurrentManagedThreadId;
                return;
            }
        }
        lock (this)
        {
            Interlocked.Increment(ref _waiters);
            while (Interlocked.CompareExchange(ref _locked, 1, 0) != 0) Monitor.Wait(this);
            Interlocked.Decrement(ref _waiters);
        }
        _owner = Environment.CurrentManagedThreadId;
    }

    /// <summary>
    /// Takes the lock if it is free or freed within a short spin; never sleeps. Returns whether
    /// it was taken. For work that may be skipped, where waiting could deadlock: the holder may
    /// be a long-lived cursor, possibly of the calling thread.
    /// </summary>
    internal bool TryLock()
    {
        for (int spin = 0; spin <= 64; spin++)
        {
            if (Volatile.Read(ref _locked) == 0 && Interlocked.CompareExchange(ref _locked, 1, 0) == 0)
            {
                _owner = Environment.CurrentManagedThreadId;
                return true;
            }
            if (Volatile.Read(ref _owner) == Environment.CurrentManagedThreadId) return false; // ours: it will not come free
            Thread.SpinWait(8);
        }
        return false;
    }

    internal void Unlock()
    {
        Volatile.Write(ref _owner, 0);
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
