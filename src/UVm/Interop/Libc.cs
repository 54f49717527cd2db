using System.Runtime.InteropServices;

namespace UVm.Interop;

/// <summary>
/// Thin, exact bindings of the libc calls UVm makes, with the Linux x86-64 constants they take.
/// Safety is added one layer up (<see cref="HostCall"/>); nothing here checks arguments.
/// </summary>
internal static unsafe partial class Libc
{
    private const string Lib = "libc.so.6";

    internal const int PROT_NONE = 0, PROT_READ = 1, PROT_WRITE = 2, PROT_EXEC = 4;
    internal const int MAP_SHARED = 0x01, MAP_PRIVATE = 0x02, MAP_FIXED = 0x10, MAP_ANONYMOUS = 0x20;
    internal const int MAP_NORESERVE = 0x4000, MAP_POPULATE = 0x8000, MAP_FIXED_NOREPLACE = 0x100000;
    internal const uint MFD_CLOEXEC = 0x1;
    internal const int FALLOC_FL_KEEP_SIZE = 0x1, FALLOC_FL_PUNCH_HOLE = 0x2;
    internal const int MADV_DONTNEED = 4, MADV_REMOVE = 9, MADV_POPULATE_READ = 22, MADV_POPULATE_WRITE = 23;
    internal const int EPERM = 1, EBADF = 9, ENOMEM = 12, EACCES = 13, EEXIST = 17, ENODEV = 19, EINVAL = 22, ENFILE = 23, EMFILE = 24, ETXTBSY = 26, EFBIG = 27, ENOSPC = 28, EOVERFLOW = 75;
    internal static readonly nint MAP_FAILED = -1;

    [LibraryImport(Lib, EntryPoint = "mmap", SetLastError = true)]
    private static partial nint SysMmap(nint addr, nuint length, int prot, int flags, int fd, long offset);

    [LibraryImport(Lib, EntryPoint = "munmap", SetLastError = true)]
    private static partial int SysMunmap(nint addr, nuint length);

    [LibraryImport(Lib, EntryPoint = "mprotect", SetLastError = true)]
    private static partial int SysMprotect(nint addr, nuint length, int prot);

    [LibraryImport(Lib, EntryPoint = "madvise", SetLastError = true)]
    private static partial int SysMadvise(nint addr, nuint length, int advice);

    [LibraryImport(Lib, EntryPoint = "memfd_create", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int SysMemfdCreate(string name, uint flags);

    [LibraryImport(Lib, EntryPoint = "ftruncate", SetLastError = true)]
    private static partial int SysFtruncate(int fd, long length);

    [LibraryImport(Lib, EntryPoint = "fallocate", SetLastError = true)]
    private static partial int SysFallocate(int fd, int mode, long offset, long length);

    [LibraryImport(Lib, EntryPoint = "pwritev", SetLastError = true)]
    private static partial nint SysPwritev(int fd, IoVec* iov, int iovcnt, long offset);

    [LibraryImport(Lib, EntryPoint = "ioctl", SetLastError = true)]
    private static partial nint SysIoctl(int fd, nuint request, void* arg);

    [LibraryImport(Lib, EntryPoint = "syscall", SetLastError = true)]
    private static partial nint SysSyscall(nint number, nint a1, nint a2, nint a3, nint a4, nint a5);

    [LibraryImport(Lib, EntryPoint = "pread", SetLastError = true)]
    internal static partial nint Pread(int fd, void* buf, nuint count, long offset);

    [LibraryImport(Lib, EntryPoint = "pwrite", SetLastError = true)]
    internal static partial nint Pwrite(int fd, void* buf, nuint count, long offset);

    [LibraryImport(Lib, EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int Open(string path, int flags);

    internal const int O_CLOEXEC = 0x80000;
    private const nint SYS_pidfd_open = 434, SYS_process_madvise = 440;
    /// <summary><c>PAGEMAP_SCAN</c>: <c>_IOWR('f', 16, struct pm_scan_arg)</c> (Linux 6.7).</summary>
    internal const nuint PAGEMAP_SCAN = 0xC0606610;

    // The calls below are the ones UVm makes; each goes through the refusal seam
    // (HostRefusal) first, so tests can make any call site fail exactly as the host would.

    internal static nint Mmap(nint addr, nuint length, int prot, int flags, int fd, long offset) =>
        HostRefusal.Refuses(HostCallSite.Mmap) ? MAP_FAILED : SysMmap(addr, length, prot, flags, fd, offset);

    internal static int Munmap(nint addr, nuint length) =>
        HostRefusal.Refuses(HostCallSite.Munmap) ? -1 : SysMunmap(addr, length);

    internal static int Mprotect(nint addr, nuint length, int prot) =>
        HostRefusal.Refuses(HostCallSite.Mprotect) ? -1 : SysMprotect(addr, length, prot);

    internal static int Madvise(nint addr, nuint length, int advice) =>
        HostRefusal.Refuses(HostCallSite.Madvise) ? -1 : SysMadvise(addr, length, advice);

    internal static int MemfdCreate(string name, uint flags) =>
        HostRefusal.Refuses(HostCallSite.MemfdCreate) ? -1 : SysMemfdCreate(name, flags);

    internal static int Ftruncate(int fd, long length) =>
        HostRefusal.Refuses(HostCallSite.Ftruncate) ? -1 : SysFtruncate(fd, length);

    internal static int Fallocate(int fd, int mode, long offset, long length) =>
        HostRefusal.Refuses(HostCallSite.Fallocate) ? -1 : SysFallocate(fd, mode, offset, length);

    internal static nint Pwritev(int fd, IoVec* iov, int iovcnt, long offset) =>
        HostRefusal.Refuses(HostCallSite.Pwritev) ? -1 : SysPwritev(fd, iov, iovcnt, offset);

    internal static int Dup(int fd) =>
        HostRefusal.Refuses(HostCallSite.Dup) ? -1 : SysDup(fd);

    internal static nint PagemapScan(int pagemapFd, PmScanArg* arg) =>
        HostRefusal.Refuses(HostCallSite.PagemapScan) ? -1 : SysIoctl(pagemapFd, PAGEMAP_SCAN, arg);

    internal static nint ProcessMadvise(int pidfd, IoVec* iov, int count, int advice) =>
        HostRefusal.Refuses(HostCallSite.Madvise) ? -1 : SysSyscall(SYS_process_madvise, pidfd, (nint)iov, count, advice, 0);

    internal static int PidfdOpen(int pid) => (int)SysSyscall(SYS_pidfd_open, pid, 0, 0, 0, 0);

    /// <summary><c>struct pm_scan_arg</c> of <c>PAGEMAP_SCAN</c> (96 bytes).</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct PmScanArg
    {
        public ulong Size, Flags, Start, End, WalkEnd, Vec, VecLen, MaxPages, CategoryInverted, CategoryMask, CategoryAnyofMask, ReturnMask;
    }

    /// <summary><c>struct page_region</c>: one run of pages <c>PAGEMAP_SCAN</c> found.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct PageRegion
    {
        public ulong Start, End, Categories;
    }

    internal const ulong PAGE_IS_FILE = 1 << 2, PAGE_IS_PRESENT = 1 << 3, PAGE_IS_SWAPPED = 1 << 4;

    internal const int F_GETFL = 3, O_ACCMODE = 3, O_RDONLY = 0, O_WRONLY = 1, O_RDWR = 2;

    [LibraryImport(Lib, EntryPoint = "fcntl", SetLastError = true)]
    internal static partial int Fcntl(int fd, int cmd);

    /// <summary><c>struct iovec</c>.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct IoVec
    {
        public nint Base;
        public nuint Length;
    }

    /// <summary>The most <see cref="IoVec"/>s one <c>pwritev</c> takes (<c>IOV_MAX</c>).</summary>
    internal const int IOV_MAX = 1024;

    [LibraryImport(Lib, EntryPoint = "dup", SetLastError = true)]
    private static partial int SysDup(int fd);

    [LibraryImport(Lib, EntryPoint = "close", SetLastError = true)]
    internal static partial int Close(int fd);

    [LibraryImport(Lib, EntryPoint = "fstat", SetLastError = true)]
    internal static partial int Fstat(int fd, StatBuf* buf);

    /// <summary><c>struct stat</c> of Linux x86-64 (144 bytes); only the fields UVm reads are named.</summary>
    [StructLayout(LayoutKind.Explicit, Size = 144)]
    internal struct StatBuf
    {
        [FieldOffset(0)] public ulong Dev;
        [FieldOffset(8)] public ulong Ino;
        [FieldOffset(48)] public long Size;
        [FieldOffset(64)] public long Blocks;
    }
}

/// <summary>
/// The checked layer over <see cref="Libc"/>: turns failures into <see cref="UVmException"/>
/// (host <c>ENOMEM</c>: <see cref="UVmError.HostNoMemory"/>; a refusal that is the host's to make,
/// such as <c>EACCES</c> for a read-only file mapped writable: <see cref="UVmError.HostRefused"/>)
/// or <see cref="InvalidOperationException"/> (anything else, a UVm bug),
/// in one place, off the hot path.
/// </summary>
internal static class HostCall
{
    internal static void Check(int rc, string what)
    {
        if (rc != 0) Fail(what);
    }

    internal static nint CheckMap(nint addr, string what)
    {
        if (addr == Libc.MAP_FAILED) Fail(what);
        return addr;
    }

    [System.Diagnostics.CodeAnalysis.DoesNotReturn]
    internal static void Fail(string what)
    {
        int errno = Marshal.GetLastPInvokeError();
        if (errno == Libc.ENOMEM)
            throw new UVmException(UVmError.HostNoMemory, $"{what} failed: the host is out of memory or mappings (errno {errno})");
        if (errno is Libc.EACCES or Libc.EPERM or Libc.ETXTBSY or Libc.ENODEV or Libc.EFBIG or Libc.EOVERFLOW or Libc.ENOSPC or Libc.EMFILE or Libc.ENFILE)
            throw new UVmException(UVmError.HostRefused, $"{what} failed: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})");
        throw new InvalidOperationException($"{what} failed: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})");
    }

    internal static int ToProt(bool read, bool write, bool exec) =>
        (read ? Libc.PROT_READ : 0) | (write ? Libc.PROT_WRITE : 0) | (exec ? Libc.PROT_EXEC : 0);

    /// <summary>Device and inode of <paramref name="fd"/>, as <c>/proc/self/maps</c> shows them.</summary>
    internal static unsafe (ulong Dev, ulong Ino) Identity(int fd)
    {
        Libc.StatBuf st;
        // SAFETY: st is a local of the kernel's struct stat size (144 bytes on x86-64).
        Check(Libc.Fstat(fd, &st), "fstat");
        return (st.Dev, st.Ino);
    }

    /// <summary>Bytes the host has really allocated for <paramref name="fd"/> (<c>st_blocks</c> × 512).</summary>
    internal static unsafe long AllocatedBytes(int fd)
    {
        Libc.StatBuf st;
        // SAFETY: as in Identity.
        Check(Libc.Fstat(fd, &st), "fstat");
        return st.Blocks * 512;
    }
}
