using UVm.Faults;
using UVm.Host;
using UVm.Io;
using UVm.PageTable;
using UVm.Interop;

namespace UVm.Spaces;

/// <summary>Page-fault resolution and fallible access to guest memory.</summary>
public sealed partial class VmSpace : IFaultResolver
{
    private const int FaultStripes = 64;
    private readonly object[] _faultStripes = CreateStripes();
    private PageFaultHandler? _pageFaultHandler;
    private string? _managedBy;                           // the layer whose handler serves the faults (Manage)
    private Func<ulong, PageFaultKind?>? _classifyAbsent; // its say on faults where nothing is mapped
    private long _spuriousFaults, _handledFaults, _unresolvedFaults;

    /// <summary>Faults resolved by re-installing a host mapping the page table already allowed.</summary>
    public long SpuriousFaults => Volatile.Read(ref _spuriousFaults);

    /// <summary>Faults the registered page-fault handler resolved.</summary>
    public long HandledFaults => Volatile.Read(ref _handledFaults);

    /// <summary>Faults left unresolved (reported as <see cref="UVmError.PageFault"/>).</summary>
    public long UnresolvedFaults => Volatile.Read(ref _unresolvedFaults);

    /// <summary>
    /// Registers the handler called for faults the page table does not already allow. Only the
    /// first registration takes effect; returns whether this one did.
    /// </summary>
    /// <exception cref="ArgumentNullException"><paramref name="handler"/> is null.</exception>
    /// <exception cref="ObjectDisposedException">The space was disposed.</exception>
    /// <exception cref="InvalidOperationException">An <c>AddressSpace</c> manages the space: its
    /// faults are served by that layer's handler, and nothing is changed. Pages filled by your
    /// code are its on-demand areas (<c>AreaBackend.OnDemand</c>).</exception>
    public bool RegisterPageFaultHandler(PageFaultHandler handler)
    {
        ArgumentNullException.ThrowIfNull(handler);
        ThrowIfDisposed();
        if (Volatile.Read(ref _managedBy) is { } manager)
            throw new InvalidOperationException($"this space is managed by {manager}, whose handler serves its faults; map an on-demand area (AreaBackend.OnDemand) for pages your code fills");
        return Interlocked.CompareExchange(ref _pageFaultHandler, handler, null) == null;
    }

    /// <summary>
    /// Hands the space's faults to the layer above that manages it (<paramref name="manager"/>
    /// names it in errors): <paramref name="handler"/> becomes the handler (a forked space already
    /// has it), <see cref="RegisterPageFaultHandler"/> refuses from then on, and
    /// <paramref name="classify"/> may name the kind of an unresolved fault the page table sees
    /// as <see cref="PageFaultKind.NotPresent"/> (null: leave it). <paramref name="classify"/>
    /// runs on any thread, with any locks held: it must take none.
    /// </summary>
    /// <exception cref="InvalidOperationException">Another handler is registered already.</exception>
    internal void Manage(string manager, PageFaultHandler handler, Func<ulong, PageFaultKind?> classify)
    {
        PageFaultHandler? had = Interlocked.CompareExchange(ref _pageFaultHandler, handler, null);
        if (had != null && had != handler) throw new InvalidOperationException("the space already has a page-fault handler");
        Volatile.Write(ref _classifyAbsent, classify);
        Volatile.Write(ref _managedBy, manager);
    }

    /// <summary>
    /// A fallible reader of guest memory <c>[va, va + len)</c>. Used after the space is disposed,
    /// every access fails with <see cref="UVmError.PageFault"/> without touching the host range
    /// (which may by then belong to another mapping).
    /// </summary>
    /// <exception cref="UVmException"><see cref="UVmError.AccessDenied"/> unless the space is activated on
    /// this thread and <c>va + len</c> neither overflows nor passes <see cref="Size"/>.</exception>
    public unsafe VmReader<Fallible> Reader(ulong va, ulong len)
    {
        // SAFETY: CheckUserAccess proved [va, va + len) lies inside the arena, which stays
        // reserved while the space lives; the primitives recover from any fault there.
        return new VmReader<Fallible>(new GuestAccess(this, _gate, CheckUserAccess(va, len)), (byte*)(HostBase + (nint)va), len);
    }

    /// <summary>A fallible writer of guest memory <c>[va, va + len)</c>.</summary>
    /// <exception cref="UVmException"><see cref="UVmError.AccessDenied"/> as for <see cref="Reader"/>.</exception>
    public unsafe VmWriter<Fallible> Writer(ulong va, ulong len)
    {
        // SAFETY: as for Reader.
        return new VmWriter<Fallible>(new GuestAccess(this, _gate, CheckUserAccess(va, len)), (byte*)(HostBase + (nint)va), len);
    }

    /// <summary>A fallible reader and writer of the same guest range, checked once.</summary>
    /// <exception cref="UVmException"><see cref="UVmError.AccessDenied"/> as for <see cref="Reader"/>.</exception>
    public unsafe void ReaderWriter(ulong va, ulong len, out VmReader<Fallible> reader, out VmWriter<Fallible> writer)
    {
        var guest = new GuestAccess(this, _gate, CheckUserAccess(va, len));
        // SAFETY: as for Reader.
        reader = new VmReader<Fallible>(guest, (byte*)(HostBase + (nint)va), len);
        writer = new VmWriter<Fallible>(guest, (byte*)(HostBase + (nint)va), len);
    }

    /// <summary>The checks every reader and writer of guest memory passes; returns the calling thread's access state.</summary>
    private ThreadAccess CheckUserAccess(ulong va, ulong len)
    {
        ThrowIfDisposed();
        NativeFaults.EnsureInstalled();
        ThreadAccess thread = ThreadAccess.Current;
        if (!ReferenceEquals(thread.Active, this)) ThrowHelper.UVm(UVmError.AccessDenied, "the space is not activated on this thread");
        ulong end = va + len;
        if (end < va || end > Size) ThrowHelper.UVm(UVmError.AccessDenied, $"[0x{va:x}, +0x{len:x}) is not inside the user space [0, 0x{Size:x})");
        return thread;
    }

    nint IFaultResolver.HostBase => HostBase;

    ulong IFaultResolver.Size => Size;

    bool IFaultResolver.Resolve(ref PageFaultInfo fault) => HandlePageFault(ref fault);

    void IFaultResolver.GiveUp(in PageFaultInfo fault) => Interlocked.Increment(ref _unresolvedFaults);

    /// <summary>
    /// Resolves a fault at <paramref name="va"/> as if the hardware had raised it: re-installs the
    /// host mapping when the page table already allows <paramref name="access"/>, else calls the
    /// registered handler. Returns whether the access can now succeed. A thread holding a live
    /// cursor never resolves (it would wait on its own locks), nor does a thread already
    /// resolving a fault of this space (a handler whose own access faults): the call returns false.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The space was disposed.</exception>
    /// <exception cref="Exception">Whatever the registered handler throws (see <see cref="PageFaultHandler"/>).</exception>
    public bool HandlePageFault(ulong va, PageFaultAccess access)
    {
        ThrowIfDisposed();
        var info = new PageFaultInfo(va, access, PageFaultKind.NotPresent, NativeFaults.SIGSEGV);
        return HandlePageFault(ref info);
    }

    /// <summary>
    /// What resolving a fault means for a space, the one path of both the faults of fallible
    /// accesses (through <see cref="FaultResolution"/>'s loop, which retries them) and
    /// <see cref="HandlePageFault(ulong, PageFaultAccess)"/>: a refill of what the page table
    /// already allows, else the registered handler under the fault's region stripe; never nested
    /// for one thread and space. Classifies the fault in <paramref name="info"/> as the page
    /// table sees it, and an unresolved one where nothing is mapped as the managing layer says
    /// (<see cref="PageFaultKind.Guard"/> in a guard area).
    /// </summary>
    private bool HandlePageFault(ref PageFaultInfo info)
    {
        if (ResolveFault(ref info)) return true;
        if (info.Kind == PageFaultKind.NotPresent && Volatile.Read(ref _classifyAbsent) is { } classify && classify(info.Address) is { } kind)
            info = info with { Kind = kind };
        return false;
    }

    /// <summary>The resolution of <see cref="HandlePageFault(ref PageFaultInfo)"/>, the kind as the page table sees it.</summary>
    private bool ResolveFault(ref PageFaultInfo info)
    {
        if (info.Address >= Size)
        {
            info = info with { Kind = PageFaultKind.OutOfRange };
            return Unresolved();
        }
        if (info.Kind == PageFaultKind.BusError || IsDisposed) return Unresolved();
        if (Spaces.Cursor.HeldByCurrentThread > 0)
        {
            // Taking a cursor could wait on this thread's own: say what the table says without locks.
            info = info with { Kind = Classify(_pt.PeekLeaf(info.Address), info.Access) };
            return Unresolved();
        }
        ThreadAccess thread = ThreadAccess.Current;
        if (!thread.EnterResolution(Id))
        {
            // A fault taken while this thread resolves one of this space (the handler touched the
            // faulting page, or any page): resolving again would recurse without end.
            info = info with { Kind = Classify(_pt.PeekLeaf(info.Address), info.Access) };
            return Unresolved();
        }
        try
        {
            if (TryFillFromPageTable(ref info))
            {
                Interlocked.Increment(ref _spuriousFaults);
                return true;
            }
            PageFaultHandler? handler = Volatile.Read(ref _pageFaultHandler);
            if (handler == null) return Unresolved();
            // One handler call at a time per 2 MiB region: a second thread faulting on the same
            // page waits, then finds it resolved and only refreshes the host. The wait gives up
            // when the space is disposed (a handler may dispose it while others wait here).
            object stripe = _faultStripes[(int)((info.Address >> 21) % FaultStripes)];
            if (!EnterStripe(stripe)) return Unresolved();
            try
            {
                if (TryFillFromPageTable(ref info))
                {
                    Interlocked.Increment(ref _spuriousFaults);
                    return true;
                }
                bool resolved;
                try
                {
                    resolved = handler(this, info);
                }
                catch (ObjectDisposedException) when (IsDisposed)
                {
                    resolved = false; // the space went away under the handler: the access fails, exactly
                }
                catch
                {
                    Interlocked.Increment(ref _unresolvedFaults);
                    throw;
                }
                // A handler may dispose the space; the access must then not touch the arena again.
                if (resolved && !IsDisposed)
                {
                    Interlocked.Increment(ref _handledFaults);
                    return true;
                }
                return Unresolved();
            }
            finally
            {
                Monitor.Exit(stripe);
            }
        }
        finally
        {
            thread.LeaveResolution();
        }
    }

    /// <summary>Takes a fault stripe, waiting while the space lives; false (not taken) once it is disposed.</summary>
    private bool EnterStripe(object stripe)
    {
        while (!Monitor.TryEnter(stripe, 1))
            if (IsDisposed) return false;
        if (!IsDisposed) return true;
        Monitor.Exit(stripe);
        return false;
    }

    private static object[] CreateStripes()
    {
        var stripes = new object[FaultStripes];
        for (int i = 0; i < stripes.Length; i++) stripes[i] = new object();
        return stripes;
    }

    private bool Unresolved()
    {
        Interlocked.Increment(ref _unresolvedFaults);
        return false;
    }

    /// <summary>What the page table says about an access to a page whose leaf entry is <paramref name="leaf"/> (0: none).</summary>
    private static PageFaultKind Classify(ulong leaf, PageFaultAccess access) =>
        !Pte.IsPresent(leaf) ? PageFaultKind.NotPresent
        : (Pte.ToProp(leaf).Flags & FaultRights.Needed(access)) == 0 ? PageFaultKind.Protection
        : PageFaultKind.NotPresent; // allowed by the table, not yet on the host

    /// <summary>
    /// If the entry at the faulting page allows the access, (re)installs its host mapping and
    /// returns true (a stale "TLB": lazy mirroring, widened rights not yet dispatched). Otherwise
    /// records in <paramref name="info"/> whether the page is absent or protected. A space
    /// disposed meanwhile, a host-mapping budget spent or a host that refuses leave the fault
    /// unresolved.
    /// </summary>
    private bool TryFillFromPageTable(ref PageFaultInfo info)
    {
        ulong page = Paging.AlignDown(info.Address, Paging.PageSize);
        PtCursor cursor;
        try
        {
            cursor = LockTable(page, page + Paging.PageSize, mutable: false);
        }
        catch (ObjectDisposedException)
        {
            return false;
        }
        var flusher = NewFlusher();
        try
        {
            PtSlot slot = cursor.Query();
            info = info with { Kind = Classify(slot.Entry, info.Access) };
            if (!slot.IsMapped || info.Kind == PageFaultKind.Protection) return false;
            if (MirrorOf(slot, page, Paging.PageSize) is not { } op) return false;
            try
            {
                // A page the host copied keeps its copy: only its rights are given back.
                if (Pte.IsHostCopy(slot.Entry) && IsHostCopied(page)) op = TlbFlushOp.ForProtect(page, Paging.PageSize, Pte.HostProt(slot.Entry));
                flusher.EnsureRoomForOneMore();
                flusher.IssueTlbFlush(op);
                flusher.DispatchTlbFlush();
            }
            catch (UVmException e) when (e.Error is UVmError.HostMappingLimit or UVmError.HostNoMemory or UVmError.HostRefused)
            {
                return false; // no room on the host, or the host refused: the fault stays unresolved
            }
            return true;
        }
        finally
        {
            cursor.Release();
        }
    }

    /// <summary>Whether the host copied the page at <paramref name="page"/> (a host copy written since it was mapped).</summary>
    private bool IsHostCopied(ulong page)
    {
        var written = new List<(ulong Start, ulong End)>(1);
        FindHostCopies(page, page + Paging.PageSize, written);
        return written.Count > 0;
    }
}
