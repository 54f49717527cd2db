using System.Runtime.CompilerServices;

namespace UVm.Faults;

/// <summary>
/// The door of fallible accesses into one space's host arena: open while the space lives,
/// closed once when it is disposed. A closed door lets no access in; <see cref="ThreadAccess"/>
/// tells the disposer when the accesses already inside have left, so the arena's host range is
/// given back (and may be reused by the next space) only when no reader or writer of the old
/// space can touch it any more.
/// </summary>
internal sealed class ArenaGate
{
    private static long s_lastId;
    private int _closed;

    /// <summary>A unique, never reused, non-zero number for the space.</summary>
    internal long Id { get; } = Interlocked.Increment(ref s_lastId);

    /// <summary>Whether the space was disposed.</summary>
    internal bool IsClosed
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => Volatile.Read(ref _closed) != 0;
    }

    /// <summary>Closes the door; true for the one call that did it.</summary>
    internal bool Close() => Interlocked.Exchange(ref _closed, 1) == 0;

    /// <summary>
    /// Waits until no other thread is inside a fallible access of this (closed) space. An access
    /// that entered before the door closed either ends on its own or faults, and its resolution
    /// finds the space disposed and gives up; one that comes later sees the door closed and
    /// never touches the arena.
    /// </summary>
    /// <remarks>
    /// Entering an access is a plain store of the space's id (<see cref="GateScope"/>'s
    /// constructor, through <see cref="ThreadAccess.Enter"/>) followed by a plain load of the
    /// door (<see cref="IsClosed"/>); x86-64 may let that load pass the store. The
    /// process-wide barrier here (<c>membarrier</c>) orders both sides: after it, either the
    /// access's store is visible to this scan, or the access sees the door closed.
    /// The calling thread's own accesses are skipped: it may dispose the space from a page-fault
    /// handler that runs inside one of them, which then gives up as soon as the handler returns.
    /// <para>Every access enters, single loads too: a load from a host range that was handed to
    /// another mapping can have effects there (a file or userfaultfd mapping fills a page on it).</para>
    /// </remarks>
    internal void WaitForAccessesToLeave()
    {
        System.Diagnostics.Debug.Assert(IsClosed);
        Interlocked.MemoryBarrierProcessWide();
        ThreadAccess.WaitWhileInside(Id);
    }
}
