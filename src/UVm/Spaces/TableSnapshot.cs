using UVm.Frames;
using UVm.PageTable;

namespace UVm.Spaces;

/// <summary>
/// A space's page table frozen at one moment, with no arena: every leaf the space had, each
/// tracked frame holding one reference of the snapshot's own and no write access, and the I/O
/// memory regions it mapped, kept open. Spaces are made from it (<see cref="VmSpace.FromSnapshot"/>)
/// and reset to it (<see cref="VmSpace.ResetTo"/>); it lives until disposed, whatever happens
/// to the space it came from.
/// </summary>
/// <remarks>
/// The table never changes after the capture, so it is read without its node locks. Readers
/// (instantiating, resetting) hold <see cref="EnterUse"/>; <see cref="Dispose"/> waits for
/// them, then gives everything back. The use lock comes after an address space's area lock and
/// before any page-table lock (see the lock order in <c>VmSpace.cs</c>).
/// </remarks>
internal sealed class TableSnapshot : IDisposable
{
    private readonly PageTable.PageTable _table;
    private readonly List<IoMem> _ioMems = new(); // each with a reference of the snapshot's; immutable once captured
    private readonly ReaderWriterLockSlim _use = new(LockRecursionPolicy.SupportsRecursion);
    private bool _disposed; // under _use (write)

    internal TableSnapshot(FramePool pool, ulong size)
    {
        Pool = pool;
        _table = new PageTable.PageTable(size);
    }

    /// <summary>The pool of every frame it holds.</summary>
    internal FramePool Pool { get; }

    /// <summary>The size of the spaces it describes.</summary>
    internal ulong Size => _table.Size;

    /// <summary>The frozen table (filled by the capture, then never changed).</summary>
    internal PageTable.PageTable Table => _table;

    /// <summary>Managed bytes of its page table.</summary>
    internal long TableBytes => _table.FootprintBytes;

    /// <summary>Whether it was disposed.</summary>
    internal bool IsDisposed => Volatile.Read(ref _disposed);

    /// <summary>The I/O memory regions its leaves map (do not change the list).</summary>
    internal IReadOnlyList<IoMem> IoMems => _ioMems;

    /// <summary>Keeps <paramref name="io"/> open for as long as the snapshot lives (during the capture).</summary>
    internal void Keep(IoMem io)
    {
        io.AddRef();
        _ioMems.Add(io);
    }

    /// <summary>The leaf entry covering <paramref name="va"/> (0 when none) and its level.</summary>
    internal (ulong Entry, int Level) PeekLeaf(ulong va)
    {
        ulong entry = _table.PeekLeaf(va, out int level);
        return (entry, level);
    }

    /// <summary>The I/O memory region of the snapshot that holds <paramref name="paddr"/>, and the offset in it.</summary>
    /// <exception cref="InvalidOperationException">None does (the capture kept every region its leaves use).</exception>
    internal (IoMem Io, ulong Offset) FindIoMem(ulong paddr)
    {
        foreach (IoMem io in _ioMems)
            if (io.Contains(paddr)) return (io, paddr - io.Paddr);
        throw new InvalidOperationException($"no I/O memory of the snapshot holds 0x{paddr:x}");
    }

    /// <summary>Calls <paramref name="leaf"/> with every leaf: its address, entry and level, in address order.</summary>
    internal void VisitLeaves(Action<ulong, ulong, int> leaf) => Visit(_table.Root, Paging.NrLevels, 0, leaf);

    private static void Visit(PtNode node, int level, ulong vaBase, Action<ulong, ulong, int> leaf)
    {
        for (int i = 0; i < Paging.EntriesPerNode; i++)
        {
            ulong pte = node.Ptes[i];
            if (!Pte.IsPresent(pte)) continue;
            ulong va = vaBase + (ulong)i * Paging.SizeAt(level);
            if (Pte.IsLast(pte, level)) leaf(va, pte, level);
            else Visit(node.Children![i]!, level - 1, va, leaf);
        }
    }

    /// <summary>
    /// Calls <paramref name="run"/> with the runs that make up <c>[start, end)</c>, in address
    /// order: each a range and the entry of its first page (0 for a hole), where every next page
    /// continues the first (the same bits, the next frame; or a hole again). A run of tracked
    /// frames is what one host mapping can mirror; I/O entries come one leaf at a time.
    /// </summary>
    internal void VisitRuns(ulong start, ulong end, Action<ulong, ulong, ulong> run)
    {
        var runs = new RunBuilder(run);
        Walk(_table.Root, Paging.NrLevels, 0, start, end, ref runs);
        runs.Flush();
    }

    private static void Walk(PtNode node, int level, ulong vaBase, ulong start, ulong end, ref RunBuilder runs)
    {
        ulong size = Paging.SizeAt(level);
        int first = (int)((start - vaBase) / size), last = (int)((end - 1 - vaBase) / size);
        if (level == 1)
        {
            // Most of the walk: page-aligned bounds, so every entry is whole.
            ulong[] ptes = node.Ptes;
            for (int i = first; i <= last; i++)
            {
                ulong pte = ptes[i];
                runs.Add(vaBase + ((ulong)i << Paging.PageShift), Paging.PageSize, Pte.IsPresent(pte) ? pte : 0);
            }
            return;
        }
        for (int i = first; i <= last; i++)
        {
            ulong va = vaBase + (ulong)i * size, lo = Math.Max(va, start), hi = Math.Min(va + size, end);
            ulong pte = node.Ptes[i];
            if (!Pte.IsPresent(pte)) runs.Add(lo, hi - lo, 0);
            else if (Pte.IsLast(pte, level)) runs.Add(lo, hi - lo, (pte & ~Pte.AddrMask) | (Pte.Paddr(pte) + (lo - va)));
            else Walk(node.Children![i]!, level - 1, va, lo, hi, ref runs);
        }
    }

    /// <summary>Accumulates pieces into maximal runs for <see cref="VisitRuns"/>.</summary>
    private struct RunBuilder(Action<ulong, ulong, ulong> sink)
    {
        private ulong _va, _len, _entry;

        [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
        internal void Add(ulong va, ulong len, ulong entry)
        {
            if (_len != 0 && va == _va + _len && Continues(entry))
            {
                _len += len;
                return;
            }
            Flush();
            (_va, _len, _entry) = (va, len, entry);
        }

        private readonly bool Continues(ulong entry) =>
            _entry == 0 ? entry == 0 : Pte.ContinuesMapping(_entry, entry, _len);

        internal void Flush()
        {
            if (_len != 0) sink(_va, _len, _entry);
            _len = 0;
        }
    }

    /// <summary>Starts a use of the snapshot; <see cref="Dispose"/> waits until it ends (<see cref="ExitUse"/>).</summary>
    /// <exception cref="ObjectDisposedException">It was disposed.</exception>
    internal void EnterUse()
    {
        _use.EnterReadLock();
        if (_disposed)
        {
            _use.ExitReadLock();
            ThrowHelper.Disposed("VmSnapshot");
        }
    }

    /// <summary>Ends a use begun with <see cref="EnterUse"/>.</summary>
    internal void ExitUse() => _use.ExitReadLock();

    /// <summary>Gives back every frame reference and I/O region, after the uses in progress end. A second call does nothing.</summary>
    public void Dispose()
    {
        _use.EnterWriteLock();
        try
        {
            if (_disposed) return;
            _disposed = true;
            var frames = new List<ulong>();
            VisitLeaves((_, pte, _) =>
            {
                if (!Pte.IsUntracked(pte)) frames.Add(Pte.Paddr(pte));
            });
            Pool.ReleaseMany(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(frames));
            foreach (IoMem io in _ioMems) io.Release();
            _ioMems.Clear();
        }
        finally
        {
            _use.ExitWriteLock();
        }
    }
}
