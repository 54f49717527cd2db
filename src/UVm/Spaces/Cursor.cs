using System.Collections;
using UVm.Frames;
using UVm.PageTable;

namespace UVm.Spaces;

/// <summary>
/// A cursor that queries a range of a space without changing it. It owns the part of the
/// page table covering its range until disposed: another cursor on an overlapping range
/// waits, even a read-only one.
/// </summary>
/// <remarks>Use it from one thread at a time. Enumerating yields each slot from the current
/// address to the range's end: <c>(range, item)</c>, item null for a hole; mapped items hold a
/// frame reference and should be disposed.</remarks>
public class Cursor : IDisposable, IEnumerable<(VaddrRange Range, VmQueriedItem? Item)>
{
    [ThreadStatic] private static HeldCount? t_held;

    private protected readonly VmSpace _space;
    private protected readonly PtCursor _pt;
    private readonly HeldCount _creator; // the count of the thread that created the cursor
    private bool _disposed;

    internal Cursor(VmSpace space, PtCursor pt)
    {
        _space = space;
        _pt = pt;
        _creator = t_held ??= new HeldCount();
        lock (_creator) _creator.Spaces.Add(space);
        Interlocked.Increment(ref _creator.Value);
    }

    /// <summary>Whether the calling thread created a cursor of <paramref name="space"/> that is not yet disposed.</summary>
    internal static bool HeldByCurrentThreadOn(VmSpace space)
    {
        if (t_held is not { } h || Volatile.Read(ref h.Value) == 0) return false;
        lock (h) return h.Spaces.Contains(space);
    }

    /// <summary>
    /// Cursors (of any space) created on the calling thread and not yet disposed. A thread
    /// holding one must not resolve page faults: resolving takes page-table locks, which may be
    /// its own. A cursor disposed on another thread is taken off its creator's count.
    /// </summary>
    internal static int HeldByCurrentThread => t_held is { } h ? Volatile.Read(ref h.Value) : 0;

    /// <summary>The range the cursor owns.</summary>
    public VaddrRange Range => new(_pt.BarrierStart, _pt.BarrierEnd);

    /// <summary>The cursor's current address.</summary>
    public ulong VirtAddr
    {
        get
        {
            ThrowIfDisposed();
            return _pt.Va;
        }
    }

    /// <summary>
    /// The slot at the current address: its range (a page or huge page when mapped, else the
    /// hole up to the next slot boundary or the cursor's end) and what is mapped there.
    /// The cursor does not move.
    /// </summary>
    /// <exception cref="UVmException"><see cref="UVmError.InvalidArgs"/> when the cursor is at or past its end.</exception>
    public (VaddrRange Range, VmQueriedItem? Item) Query()
    {
        ThrowIfDisposed();
        if (_pt.Va >= _pt.BarrierEnd) ThrowHelper.UVm(UVmError.InvalidArgs, $"the cursor is at 0x{_pt.Va:x}, past its end 0x{_pt.BarrierEnd:x}");
        ulong va = _pt.Va;
        PtSlot slot = _pt.Query();
        if (!slot.IsMapped)
            return (new VaddrRange(va, Math.Min(slot.Va + slot.Size, _pt.BarrierEnd)), null);
        return (new VaddrRange(slot.Va, slot.Va + slot.Size), ToItem(slot));
    }

    /// <summary>
    /// Moves to the first mapped address in the next <paramref name="len"/> bytes and returns
    /// it; returns null when there is none, leaving the cursor somewhere at or after that span.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The span passes the cursor's end.</exception>
    public ulong? FindNext(ulong len)
    {
        ThrowIfDisposed();
        CheckSpan(len);
        return _pt.FindNext(len);
    }

    /// <summary>Moves to <paramref name="va"/>.</summary>
    /// <exception cref="ArgumentException"><paramref name="va"/> is not page aligned.</exception>
    /// <exception cref="UVmException"><see cref="UVmError.InvalidArgs"/> when <paramref name="va"/> is outside the cursor's range.</exception>
    public void Jump(ulong va)
    {
        ThrowIfDisposed();
        if (!Paging.IsAligned(va)) ThrowHelper.Argument($"0x{va:x} is not page aligned", nameof(va));
        if (va < _pt.BarrierStart || va >= _pt.BarrierEnd)
            ThrowHelper.UVm(UVmError.InvalidArgs, $"0x{va:x} is outside the cursor's range {Range}");
        _pt.Jump(va);
    }

    /// <summary>Enumerates the slots from the current address to the end, moving the cursor.</summary>
    public IEnumerator<(VaddrRange Range, VmQueriedItem? Item)> GetEnumerator()
    {
        ThrowIfDisposed();
        while (_pt.Va < _pt.BarrierEnd)
        {
            var result = Query();
            _pt.JumpOrExhaust(result.Range.End); // past the slot, or the whole hole
            yield return result;
        }
    }

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    /// <summary>One thread's count of live cursors, shared with the cursors it created so that whoever disposes them updates it.</summary>
    private sealed class HeldCount
    {
        internal int Value;
        internal readonly List<VmSpace> Spaces = new(); // one entry per live cursor, under lock(this)
    }

    /// <summary>The slot at the current address (no frame handle is created); the cursor must be inside its range.</summary>
    internal PageSlot QuerySlot() => PageSlot.Of(_pt.Query());

    /// <summary>Releases the cursor's part of the page table. A second call does nothing.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        try
        {
            OnDispose();
        }
        finally
        {
            _pt.Release();
            lock (_creator) _creator.Spaces.Remove(_space);
            Interlocked.Decrement(ref _creator.Value);
        }
    }

    private protected virtual void OnDispose() { }

    private protected void ThrowIfDisposed()
    {
        if (_disposed) ThrowHelper.Disposed(GetType().Name);
    }

    private protected void CheckSpan(ulong len)
    {
        if (len > _pt.BarrierEnd - Math.Min(_pt.Va, _pt.BarrierEnd))
            ThrowHelper.OutOfRange($"0x{len:x} bytes from 0x{_pt.Va:x} pass the cursor's end 0x{_pt.BarrierEnd:x}", nameof(len));
    }

    private protected VmQueriedItem ToItem(PtSlot slot)
    {
        PageProperty prop = Pte.ToProp(slot.Entry);
        ulong paddr = Pte.Paddr(slot.Entry);
        if (Pte.IsUntracked(slot.Entry)) return new MappedIoMem(paddr, prop);
        // The entry holds a reference and we hold the node's lock, so the frame is alive.
        _space.Pool.AddRef(paddr);
        return new MappedRam(new UFrame(_space.Pool, paddr), prop);
    }
}
