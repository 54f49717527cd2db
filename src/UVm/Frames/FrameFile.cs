using UVm.Interop;

namespace UVm.Frames;

/// <summary>
/// The host side of a pool: its sparse <c>memfd</c> (byte offset = <c>Paddr</c>), the linear map
/// (the whole memfd mapped once read-write, shared, at a private host address), the metadata
/// mapping (one reference count per frame, anonymous memory), hole punching and copies through
/// the file. Every host call of the frame layer is here.
/// </summary>
/// <remarks>
/// No locks and no bookkeeping of which frame is free: the pool calls it under its own lock
/// where that matters, and unmaps it (<see cref="Close"/>) only once no frame is in use.
/// </remarks>
internal sealed unsafe class FrameFile
{
    private readonly nuint _refsBytes;
    private long _punchCalls;

    /// <summary>
    /// Creates the memfd of <paramref name="capacityBytes"/> bytes, maps it linearly and maps
    /// the metadata of <paramref name="totalFrames"/> frames. Nothing is resident until used.
    /// A refusal of any step leaves nothing behind (no descriptor, no mapping).
    /// </summary>
    /// <exception cref="UVmException"><see cref="UVmError.HostNoMemory"/> or <see cref="UVmError.HostRefused"/> when the host refuses a step.</exception>
    internal FrameFile(ulong capacityBytes, ulong totalFrames)
    {
        Capacity = capacityBytes;
        Fd = Libc.MemfdCreate("uvm-frames", Libc.MFD_CLOEXEC);
        if (Fd < 0) HostCall.Fail("memfd_create");
        try
        {
            HostCall.Check(Libc.Ftruncate(Fd, (long)capacityBytes), "ftruncate of the frame pool");
            // SAFETY: the mappings below are owned by the pool: unmapped only in Close, which the
            // pool calls once no frame is in use.
            Linear = (byte*)HostCall.CheckMap(
                Libc.Mmap(0, (nuint)capacityBytes, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED | Libc.MAP_NORESERVE, Fd, 0),
                "mmap of the linear map");
            _refsBytes = (nuint)((totalFrames * sizeof(int) + Paging.PageSize - 1) & ~(Paging.PageSize - 1));
            Refs = (int*)HostCall.CheckMap(
                Libc.Mmap(0, _refsBytes, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_NORESERVE, -1, 0),
                "mmap of the frame metadata");
        }
        catch
        {
            if (Linear != null) Libc.Munmap((nint)Linear, (nuint)capacityBytes);
            Libc.Close(Fd);
            throw;
        }
        Identity = HostCall.Identity(Fd);
    }

    /// <summary>Size of the memfd in bytes.</summary>
    internal ulong Capacity { get; }

    internal int Fd { get; }

    /// <summary>Device and inode of the memfd, as <c>/proc/self/maps</c> shows them.</summary>
    internal (ulong Dev, ulong Ino) Identity { get; }

    /// <summary>The linear map: <c>Linear + paddr</c> is the frame at <c>paddr</c>, read-write.</summary>
    internal byte* Linear { get; }

    /// <summary>The metadata: <c>Refs[paddr &gt;&gt; PageShift]</c> is the reference count of that frame.</summary>
    internal int* Refs { get; }

    /// <summary>Number of <c>fallocate(PUNCH_HOLE)</c> calls made so far, refused ones included.</summary>
    internal long PunchCalls => Volatile.Read(ref _punchCalls);

    /// <summary>Bytes the host has actually allocated for the memfd (<c>st_blocks</c>).</summary>
    internal long AllocatedBytes => HostCall.AllocatedBytes(Fd);

    /// <summary>
    /// Punches frames <c>[firstFrame, firstFrame + frames)</c> out of the memfd, so they read as
    /// zero and cost the host nothing. Never throws: returns false when the host refuses, and
    /// the frames keep their contents.
    /// </summary>
    internal bool TryPunch(ulong firstFrame, ulong frames)
    {
        int rc = Libc.Fallocate(Fd, Libc.FALLOC_FL_PUNCH_HOLE | Libc.FALLOC_FL_KEEP_SIZE,
            (long)(firstFrame << Paging.PageShift), (long)(frames << Paging.PageShift));
        Interlocked.Increment(ref _punchCalls);
        return rc == 0;
    }

    /// <summary>
    /// Copies the contents of the frames at <paramref name="sources"/> into the run of frames
    /// starting at <paramref name="firstDestination"/> (source <c>i</c> into destination frame
    /// <c>i</c>), through the memfd (<c>pwritev</c>) rather than the linear map.
    /// </summary>
    /// <remarks>The caller holds a reference to every frame and keeps the sources from changing.</remarks>
    /// <exception cref="UVmException"><see cref="UVmError.HostNoMemory"/> when the host cannot allocate the pages.</exception>
    internal void CopyFrames(ulong firstDestination, ReadOnlySpan<ulong> sources)
    {
        const int Batch = 64;
        Span<Libc.IoVec> iov = stackalloc Libc.IoVec[Batch];
        for (int done = 0; done < sources.Length; done += Batch)
        {
            int n = Math.Min(Batch, sources.Length - done);
            ulong total = (ulong)n * Paging.PageSize, written = 0;
            while (written < total)
            {
                // After a short write (a signal, memory pressure) go on from the first byte not written.
                int first = (int)(written / Paging.PageSize);
                ulong skip = written % Paging.PageSize;
                for (int i = first; i < n; i++)
                {
                    ulong from = i == first ? skip : 0;
                    iov[i - first] = new Libc.IoVec { Base = (nint)(Linear + sources[done + i] + from), Length = (nuint)(Paging.PageSize - from) };
                }
                nint wrote;
                // SAFETY: every iovec names (the rest of) a frame of this pool inside the linear
                // map, which lives as long as the pool; the destination lies inside the memfd.
                fixed (Libc.IoVec* v = iov)
                    wrote = Libc.Pwritev(Fd, v, n - first, (long)(firstDestination + (ulong)done * Paging.PageSize + written));
                if (wrote <= 0) HostCall.Fail("pwritev of frame copies");
                written += (ulong)wrote;
            }
        }
    }

    /// <summary>Unmaps the linear map and the metadata and closes the memfd. Called once, by the pool, when no frame is in use.</summary>
    internal void Close()
    {
        // SAFETY: the pool calls this once, under its lock, with no frame in use and its disposed
        // flag set, so no handle, mapping or reference-count read can reach either mapping again.
        Libc.Munmap((nint)Linear, (nuint)Capacity);
        Libc.Munmap((nint)Refs, _refsBytes);
        Libc.Close(Fd);
    }
}
