using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using UVm.Interop;

namespace UVm.Host;

/// <summary>
/// The host's side of host copies: a page mapped <c>MAP_PRIVATE</c> from a frame is copied by
/// the kernel on its first write, and the copy is an anonymous page of the arena. This finds
/// those copies (<c>PAGEMAP_SCAN</c> of <c>/proc/self/pagemap</c>: present or swapped and not
/// a file page), drops them (<c>process_madvise(MADV_DONTNEED)</c>, up to
/// <see cref="Libc.IOV_MAX"/> ranges a call), and reads and writes their contents whatever
/// their protection (<c>/proc/self/mem</c>, which the kernel lets a process use on itself).
/// </summary>
/// <remarks>
/// Every other mapping of an arena is shared (frames, I/O memory) or reserved and inaccessible,
/// so in an arena "anonymous page" means exactly "a host copy". The descriptors are opened once
/// for the process, on first use, and live as long as it does.
/// </remarks>
internal static unsafe class HostCopies
{
    private static readonly Lazy<Files?> s_files = new(() => HostRefusal.Unrefused(Probe));

    private sealed record Files(int Pagemap, int Mem, int Pidfd);

    /// <summary>
    /// Whether this host finds, drops and reads copies as UVm needs (Linux 6.13 or later:
    /// <c>PAGEMAP_SCAN</c>, <c>process_madvise</c> on oneself, <c>/proc/self/mem</c> writable).
    /// Checked once, on a page of its own: a copy made by a write is found, its contents read
    /// and written through <c>/proc/self/mem</c>, dropped, and not found again.
    /// </summary>
    internal static bool Supported => s_files.Value != null;

    private static Files Host => s_files.Value ?? throw new InvalidOperationException("host copies are not supported here");

    private static Files? Probe()
    {
        int pagemap = Libc.Open("/proc/self/pagemap", Libc.O_RDONLY | Libc.O_CLOEXEC);
        int mem = Libc.Open("/proc/self/mem", Libc.O_RDWR | Libc.O_CLOEXEC);
        int pidfd = Libc.PidfdOpen(Environment.ProcessId);
        int memfd = Libc.MemfdCreate("uvm-host-copy-probe", Libc.MFD_CLOEXEC);
        nint page = Libc.MAP_FAILED;
        bool ok = false;
        try
        {
            if (pagemap < 0 || mem < 0 || pidfd < 0 || memfd < 0 || Libc.Ftruncate(memfd, (long)Paging.PageSize) != 0) return null;
            page = Libc.Mmap(0, (nuint)Paging.PageSize, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_PRIVATE, memfd, 0);
            if (page == Libc.MAP_FAILED) return null;
            var files = new Files(pagemap, mem, pidfd);
            // SAFETY: page is a fresh private mapping of one page, readable and writable.
            *(byte*)page = 0x5A;
            if (Libc.Mprotect(page, (nuint)Paging.PageSize, Libc.PROT_NONE) != 0) return null;
            byte b = 0;
            if (Libc.Pread(mem, &b, 1, page) != 1 || b != 0x5A) return null;
            b = 0xA5;
            if (Libc.Pwrite(mem, &b, 1, page + 1) != 1) return null;
            var written = new List<(ulong, ulong)>();
            if (!TryFindWritten(files, page, 0, Paging.PageSize, written) || written.Count != 1) return null;
            if (Libc.Mprotect(page, (nuint)Paging.PageSize, Libc.PROT_READ) != 0 || ((byte*)page)[1] != 0xA5) return null;
            if (!TryDrop(files, page, written)) return null;
            written.Clear();
            // SAFETY: still mapped and readable; after the drop it reads the file (zeros) again.
            if (!TryFindWritten(files, page, 0, Paging.PageSize, written) || written.Count != 0 || *(byte*)page != 0) return null;
            ok = true;
            return files;
        }
        finally
        {
            if (page != Libc.MAP_FAILED) Libc.Munmap(page, (nuint)Paging.PageSize);
            if (memfd >= 0) Libc.Close(memfd);
            if (!ok)
            {
                if (pagemap >= 0) Libc.Close(pagemap);
                if (mem >= 0) Libc.Close(mem);
                if (pidfd >= 0) Libc.Close(pidfd);
            }
        }
    }

    /// <summary>
    /// Adds to <paramref name="written"/> the runs of <c>[start, end)</c> (guest addresses of the
    /// arena at <paramref name="arenaBase"/>) that hold host copies, in address order.
    /// </summary>
    /// <exception cref="UVmException"><see cref="UVmError.HostNoMemory"/> or <see cref="UVmError.HostRefused"/>: the host refused the scan.</exception>
    internal static void FindWritten(nint arenaBase, ulong start, ulong end, List<(ulong Start, ulong End)> written)
    {
        if (!TryFindWritten(Host, arenaBase, start, end, written)) HostCall.Fail("PAGEMAP_SCAN of the arena");
    }

    private static bool TryFindWritten(Files files, nint arenaBase, ulong start, ulong end, List<(ulong Start, ulong End)> written)
    {
        const int Vec = 256;
        Libc.PageRegion* regions = stackalloc Libc.PageRegion[Vec];
        ulong host = (ulong)arenaBase;
        var arg = new Libc.PmScanArg
        {
            Size = (ulong)sizeof(Libc.PmScanArg),
            End = host + end,
            Vec = (ulong)regions,
            VecLen = Vec,
            // Not a file page, and present or swapped out: an anonymous page, i.e. a host copy.
            CategoryInverted = Libc.PAGE_IS_FILE,
            CategoryMask = Libc.PAGE_IS_FILE,
            CategoryAnyofMask = Libc.PAGE_IS_PRESENT | Libc.PAGE_IS_SWAPPED,
            ReturnMask = Libc.PAGE_IS_PRESENT | Libc.PAGE_IS_SWAPPED,
        };
        for (ulong at = host + start; at < host + end; at = arg.WalkEnd)
        {
            arg.Start = at;
            // SAFETY: arg and regions are locals of the kernel's layouts; the kernel writes at most VecLen regions.
            nint n = Libc.PagemapScan(files.Pagemap, &arg);
            if (n < 0) return false;
            for (int i = 0; i < (int)n; i++)
            {
                (ulong s, ulong e) = (regions[i].Start - host, regions[i].End - host);
                if (written.Count > 0 && written[^1].End == s) written[^1] = (written[^1].Start, e);
                else written.Add((s, e));
            }
            if (arg.WalkEnd <= at) return false; // no progress: never expected
        }
        return true;
    }

    /// <summary>
    /// Drops the host copies of <paramref name="ranges"/> (guest addresses of the arena at
    /// <paramref name="arenaBase"/>): they read their frames again.
    /// </summary>
    /// <exception cref="UVmException"><see cref="UVmError.HostNoMemory"/> or <see cref="UVmError.HostRefused"/>: refused (some may be dropped).</exception>
    internal static void Drop(nint arenaBase, List<(ulong Start, ulong End)> ranges)
    {
        if (!TryDrop(Host, arenaBase, ranges)) HostCall.Fail("process_madvise(MADV_DONTNEED) of host copies");
    }

    private static bool TryDrop(Files files, nint arenaBase, List<(ulong Start, ulong End)> ranges)
    {
        Libc.IoVec* iov = stackalloc Libc.IoVec[Libc.IOV_MAX];
        for (int done = 0; done < ranges.Count;)
        {
            int n = Math.Min(Libc.IOV_MAX, ranges.Count - done);
            long bytes = 0;
            for (int i = 0; i < n; i++)
            {
                (ulong s, ulong e) = ranges[done + i];
                iov[i] = new Libc.IoVec { Base = arenaBase + (nint)s, Length = (nuint)(e - s) };
                bytes += (long)(e - s);
            }
            // SAFETY: iov holds n vectors over ranges of the arena, which stays mapped (the caller holds its table).
            nint advised = Libc.ProcessMadvise(files.Pidfd, iov, n, Libc.MADV_DONTNEED);
            if (advised != bytes) return false;
            done += n;
        }
        return true;
    }

    /// <summary>Reads the page at guest <paramref name="va"/> whatever its protection (it must be mapped).</summary>
    internal static void ReadPage(nint arenaBase, ulong va, nint into)
    {
        // SAFETY: into points to a page-sized buffer of the caller's; /proc/self/mem reads the arena's page.
        if (Libc.Pread(Host.Mem, (void*)into, (nuint)Paging.PageSize, arenaBase + (nint)va) != (nint)Paging.PageSize)
            HostCall.Fail("read of a host copy through /proc/self/mem");
    }

    /// <summary>Writes the page at guest <paramref name="va"/> whatever its protection (a private mapping gets a host copy).</summary>
    internal static void WritePage(nint arenaBase, ulong va, ReadOnlySpan<byte> contents)
    {
        fixed (byte* p = contents)
        {
            // SAFETY: contents is a page; /proc/self/mem writes the arena's page (copying a private one first).
            if (Libc.Pwrite(Host.Mem, p, (nuint)Paging.PageSize, arenaBase + (nint)va) != (nint)Paging.PageSize)
                HostCall.Fail("write of a host copy through /proc/self/mem");
        }
    }

    /// <summary>
    /// Whether <c>[va, va + size)</c> overlaps one of <paramref name="written"/> (address order),
    /// for callers going through ascending slots: <paramref name="at"/> is where the previous call
    /// stopped (start at 0).
    /// </summary>
    internal static bool Overlaps(List<(ulong Start, ulong End)> written, ref int at, ulong va, ulong size)
    {
        while (at < written.Count && written[at].End <= va) at++;
        return at < written.Count && written[at].Start < va + size;
    }

    /// <summary>The pages of <paramref name="ranges"/>, counted.</summary>
    internal static int Pages(List<(ulong Start, ulong End)> ranges)
    {
        ulong pages = 0;
        foreach ((ulong s, ulong e) in ranges) pages += (e - s) / Paging.PageSize;
        return (int)pages;
    }

    /// <summary>A page-sized scratch buffer, pinned for its lifetime (a stash's page).</summary>
    internal static byte[] NewPage() => GC.AllocateUninitializedArray<byte>((int)Paging.PageSize, pinned: true);

    /// <summary>The address of a pinned buffer from <see cref="NewPage"/>.</summary>
    internal static nint AddressOf(byte[] pinned) => (nint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(pinned));
}
