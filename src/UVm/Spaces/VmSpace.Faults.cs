using UVm.Faults;
using UVm.Host;
using UVm.Io;
using UVm.PageTable;

namespace UVm.Spaces;

/// <summary>Page-fault resolution and fallible access to guest memory.</summary>
public sealed partial class VmSpace : IFaultResolver
{
    private const int FaultStripes = 64;
    private readonly object[] _faultStripes = CreateStripes();
    private PageFaultHandler? _pageFaultHandler;
    private long _spuriousFaults, _handledFaults, _unresolvedFaults;

    /// <summary>Faults resolved by re-installing a host mapping the page table already allowed.</summary>
    public long SpuriousFaults => Volatile.Read(ref _spuriousFaults);

    /// <summary>Faults the registered page-fault handler resolved.</summary>
    public long HandledFaults => Volatile.Read(ref _handledFaults);

    /// <summary>Faults left unresolved (reported as <see cref="UVmError.PageFault"/>).</summary>
    public long UnresolvedFaults => Volatile.Read(ref _unresolvedFaults);

    /// <summary>
    /// Registers the handler called for faults the page table does not already allow. Only the
    /// first registration takes effect, as in the seed; returns whether this one did.
    /// </summary>
    /// <exception cref="ArgumentNullException"><paramref name="handler"/> is null.</exception>
    /// <exception cref="ObjectDisposedException">The space was disposed.</exception>
    public bool RegisterPageFaultHandler(PageFaultHandler handler)
    {
        ArgumentNullException.ThrowIfNull(handler);
        ThrowIfDisposed();
        return Interlocked.CompareExchange(ref _pageFaultHandler, handler, null) == null;
    }

    /// <summary>
    /// A fallible reader of guest memory <c>[va, va + len)</c>. Like the seed's, it must not be
    /// used after the space is disposed (its host range may by then belong to another mapping).
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

    /// <summary>The checks of the seed's reader and writer; returns the calling thread's access state.</summary>
    private AccessThread CheckUserAccess(ulong va, ulong len)
    {
        ThrowIfDisposed();
        NativeFaults.EnsureInstalled();
        AccessThread thread = AccessThread.Current;
        if (!ReferenceEquals(thread.Active, this)) ThrowHelper.UVm(UVmError.AccessDenied, "the space is not activated on this thread");
        ulong end = va + len;
        if (end < va || end > Size) ThrowHelper.UVm(UVmError.AccessDenied, $"[0x{va:x}, +0x{len:x}) is not inside the user space [0, 0x{Size:x})");
        return thread;
    }

    nint IFaultResolver.HostBase => HostBase;

    bool IFaultResolver.Resolve(in NativeFault fault, out PageFaultInfo info)
    {
        ulong host = fault.Addr, start = (ulong)HostBase;
        var access = (PageFaultAccess)fault.Access;
        if (host < start || host - start >= Size)
        {
            info = new PageFaultInfo(host, access, PageFaultKind.OutOfRange, fault.Signo);
            Interlocked.Increment(ref _unresolvedFaults);
            return false;
        }
        info = new PageFaultInfo(host - start, access, fault.Signo == NativeFaults.SIGBUS ? PageFaultKind.BusError : PageFaultKind.NotPresent, fault.Signo);
        return HandlePageFault(ref info);
    }

    void IFaultResolver.GiveUp(in PageFaultInfo info) => Interlocked.Increment(ref _unresolvedFaults);

    /// <summary>
    /// Resolves a fault at <paramref name="va"/> as if the hardware had raised it: re-installs the
    /// host mapping when the page table already allows <paramref name="access"/>, else calls the
    /// registered handler. Returns whether the access can now succeed. A thread holding a live
    /// cursor never resolves (it would wait on its own locks): the call returns false.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The space was disposed.</exception>
    public bool HandlePageFault(ulong va, PageFaultAccess access)
    {
        ThrowIfDisposed();
        var info = new PageFaultInfo(va, access, PageFaultKind.NotPresent, NativeFaults.SIGSEGV);
        return HandlePageFault(ref info);
    }

    private bool HandlePageFault(ref PageFaultInfo info)
    {
        if (Spaces.Cursor.HeldByCurrentThread > 0 || IsDisposed || info.Address >= Size || info.Kind == PageFaultKind.BusError)
        {
            if (info.Address >= Size) info = info with { Kind = PageFaultKind.OutOfRange };
            Interlocked.Increment(ref _unresolvedFaults);
            return false;
        }
        if (TryFillFromPageTable(ref info))
        {
            Interlocked.Increment(ref _spuriousFaults);
            return true;
        }
        PageFaultHandler? handler = Volatile.Read(ref _pageFaultHandler);
        if (handler != null)
        {
            // One handler call at a time per 2 MiB region: a second thread faulting on the same
            // page waits, then finds it resolved and only refreshes the host.
            lock (_faultStripes[(int)((info.Address >> 21) % FaultStripes)])
            {
                if (TryFillFromPageTable(ref info))
                {
                    Interlocked.Increment(ref _spuriousFaults);
                    return true;
                }
                // A handler may dispose the space; the access must then not touch the arena again.
                if (handler(this, info) && !IsDisposed)
                {
                    Interlocked.Increment(ref _handledFaults);
                    return true;
                }
            }
        }
        Interlocked.Increment(ref _unresolvedFaults);
        return false;
    }

    /// <summary>
    /// If the entry at the faulting page allows the access, (re)installs its host mapping and
    /// returns true (a stale "TLB": lazy mirroring, widened rights not yet dispatched). Otherwise
    /// records in <paramref name="info"/> whether the page is absent or protected.
    /// </summary>
    private bool TryFillFromPageTable(ref PageFaultInfo info)
    {
        ulong page = Paging.AlignDown(info.Address, Paging.PageSize);
        var cursor = new PtCursor(_pt, page, page + Paging.PageSize, mutable: false);
        var flusher = NewFlusher();
        try
        {
            PtSlot slot = cursor.Query();
            if (!slot.IsMapped)
            {
                info = info with { Kind = PageFaultKind.NotPresent };
                return false;
            }
            PageProperty prop = Pte.ToProp(slot.Entry);
            PageFlags need = info.Access switch { PageFaultAccess.Write => PageFlags.W, PageFaultAccess.Execute => PageFlags.X, _ => PageFlags.R };
            if ((prop.Flags & need) == 0)
            {
                info = info with { Kind = PageFaultKind.Protection };
                return false;
            }
            try
            {
                flusher.EnsureRoomForOneMore();
            }
            catch (UVmException e) when (e.Error == UVmError.HostMappingLimit)
            {
                return false; // no room on the host: the fault stays unresolved
            }
            ulong paddr = Pte.Paddr(slot.Entry) + (page - slot.Va);
            int prot = Pte.HostProt(slot.Entry);
            if (!Pte.IsUntracked(slot.Entry))
            {
                flusher.IssueTlbFlush(TlbFlushOp.ForMap(page, Paging.PageSize, Pool.Fd, paddr, prot));
            }
            else if (FindIoMemByPaddr(paddr) is { } io)
            {
                flusher.IssueTlbFlush(TlbFlushOp.ForMap(page, Paging.PageSize, io.Io.Fd, io.Io.FileOffset + io.Offset, prot));
            }
            else
            {
                return false;
            }
            flusher.DispatchTlbFlush();
            return true;
        }
        finally
        {
            cursor.Release();
        }
    }

    private static object[] CreateStripes()
    {
        var stripes = new object[FaultStripes];
        for (int i = 0; i < stripes.Length; i++) stripes[i] = new object();
        return stripes;
    }
}
