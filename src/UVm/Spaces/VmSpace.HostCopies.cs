using UVm.Host;
using UVm.PageTable;

namespace UVm.Spaces;

// Host copies: the pages a snapshot shares with a space are mapped MAP_PRIVATE with the rights
// they had, so the host copies a page on its first write, with no fault of UVm's. The page table
// stays the truth about what is mapped; the contents of a page the host copied are in the arena.
// A reset finds the copies (PAGEMAP_SCAN) and drops them; whatever needs every page's contents
// in its frames (a fork, a snapshot, the write watch) dissolves them first.
public sealed partial class VmSpace
{
    private bool _hostCopiesWanted;  // VmSpaceOptions.HostCopies, passed on to the spaces made from this one
    private bool _hostCopiesOff;     // not wanted, or a write watch started here
    private volatile bool _mayHoldHostCopies;

    /// <summary>
    /// Whether the snapshot paths of this space (taking a snapshot, being made from one, a reset
    /// to one) make host copies: <see cref="VmSpaceOptions.HostCopies"/>, the host supports them
    /// (<see cref="Host.HostCopies.Supported"/>), and no write watch was started (the watch must
    /// see every first write).
    /// </summary>
    internal bool UsesHostCopies => !_hostCopiesOff && HostCopies.Supported;

    /// <summary>Whether some entry of the table may be a host copy (set when one is made, cleared when all are dissolved).</summary>
    internal bool MayHoldHostCopies => _mayHoldHostCopies;

    /// <summary>A snapshot's entry as this space holds it: a host copy stays one only if the space uses host copies; otherwise it is an ordinary copy-on-write entry (no W).</summary>
    internal ulong Adapt(ulong frozen) =>
        Pte.IsHostCopy(frozen) && !UsesHostCopies ? frozen & ~(Pte.HostCopy | Pte.Writable) : frozen;

    /// <summary>Notes that the table now may hold host copies (before the first is mirrored).</summary>
    internal void HoldsHostCopies() => _mayHoldHostCopies = true;

    /// <summary>Adds the runs of <c>[start, end)</c> the host copied to <paramref name="written"/> (see <see cref="HostCopies.FindWritten"/>).</summary>
    internal void FindHostCopies(ulong start, ulong end, List<(ulong Start, ulong End)> written) =>
        HostCopies.FindWritten(_arena.Base, start, end, written);

    /// <summary>
    /// Dissolves every host copy of the space into ordinary entries (see
    /// <see cref="CursorMut.DissolveHostCopies"/>), or with <paramref name="keepUnwritten"/> only
    /// those the host copied (for a snapshot, which may share the others' frames as they are), as
    /// one batch over the whole table, and with <paramref name="stop"/> makes none again. Refused,
    /// the table and the contents are as before.
    /// </summary>
    /// <remarks>Waits for live cursors of other threads; the calling thread must hold none of this space.</remarks>
    /// <exception cref="ObjectDisposedException">The space was disposed.</exception>
    /// <exception cref="UVmException"><see cref="UVmError.NoMemory"/>, <see cref="UVmError.HostMappingLimit"/>,
    /// <see cref="UVmError.HostNoMemory"/> or <see cref="UVmError.HostRefused"/>: refused; nothing changed.</exception>
    internal void DissolveHostCopies(bool stop, bool keepUnwritten = false)
    {
        ThrowIfDisposed();
        if (_mayHoldHostCopies)
        {
            var c = new CursorMut(this, LockTable(0, Size, mutable: true), NewFlusher());
            try
            {
                DissolveLocked(c, keepUnwritten);
            }
            finally
            {
                c.Dispose();
            }
        }
        // From here no snapshot path makes new ones (the caller holds off every snapshot path meanwhile).
        if (stop) _hostCopiesOff = true;
    }

    /// <summary><see cref="DissolveHostCopies"/> under a cursor over the whole table.</summary>
    private void DissolveLocked(CursorMut c, bool keepUnwritten)
    {
        if (!_mayHoldHostCopies) return;
        int kept;
        try
        {
            try
            {
                kept = c.DissolveHostCopies(keepUnwritten);
            }
            catch
            {
                c.Abandon();
                throw;
            }
            c.Flusher.DispatchTlbFlush();
        }
        catch
        {
            // The copies lost W on the host before the batch; refused, the table has them as before.
            c.RegrantHostCopies();
            throw;
        }
        if (kept == 0) _mayHoldHostCopies = false;
    }
}
