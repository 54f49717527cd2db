using System.Runtime.CompilerServices;
using UVm.Faults;

namespace UVm.Io;

/// <summary>
/// The operations of fallible readers and writers: copies to and from guest memory done by
/// UVm's fault-recovering primitives. A fault is resolved by the space (in ordinary managed
/// context) and the operation continues from the exact byte where it stopped; an unresolved
/// fault ends it with <see cref="UVmError.PageFault"/> and the exact count of bytes done.
/// Nothing here allocates.
/// </summary>
/// <remarks>
/// A resolution that claims success but leaves the access failing is believed at most
/// <see cref="MaxRetriesWithoutProgress"/> times in a row for one access (wherever it faults:
/// a handler that maps one page by unmapping another cannot make an access spin), then the
/// access is reported as a fault. Every byte a copy moves starts the count again. So does an
/// access whose page other threads keep taking rights from (forks, snapshots or resets of the
/// space, one after the other, each landing between a resolution and the retry): it too may end
/// with <see cref="UVmError.PageFault"/> at that page, and succeeds when tried again.
/// </remarks>
[SkipLocalsInit] // the value locals of single accesses are written by the primitive before they are read
public static unsafe class FallibleIo
{
    /// <summary>Resolutions believed for one access in a row without it moving a byte further, before it fails as a fault.</summary>
    public const int MaxRetriesWithoutProgress = FaultResolution.MaxRetriesWithoutProgress;

    /// <summary>The guest address of the reader's next byte.</summary>
    public static ulong GuestAddress(this ref VmReader<Fallible> reader) => (ulong)(reader.Cursor - reader._guest.Resolver.HostBase);

    /// <summary>The guest address of the writer's next byte.</summary>
    public static ulong GuestAddress(this ref VmWriter<Fallible> writer) => (ulong)(writer.Cursor - writer._guest.Resolver.HostBase);

    /// <summary>
    /// Copies <c>min(Remain, writer.Avail)</c> bytes of guest memory into <paramref name="writer"/>;
    /// both cursors advance by exactly the bytes copied.
    /// </summary>
    public static CopyResult ReadFallible(this ref VmReader<Fallible> reader, ref VmWriter<Infallible> writer)
    {
        ulong want = Math.Min(reader.Remain, writer.Avail);
        // SAFETY: `want` bytes remain in the reader's checked guest range and in the writer's
        // library memory, which its creator keeps valid and pinned.
        CopyResult r = Copy(reader._guest, writer._cursor, reader._cursor, want, PageFaultAccess.Read);
        reader.Advance(r.Bytes);
        writer.Advance(r.Bytes);
        return r;
    }

    /// <summary>Copies <c>min(Remain, destination.Length)</c> bytes of guest memory into <paramref name="destination"/>.</summary>
    public static CopyResult ReadFallible(this ref VmReader<Fallible> reader, Span<byte> destination)
    {
        ulong want = Math.Min(reader.Remain, (ulong)destination.Length);
        CopyResult r;
        // SAFETY: the span is pinned for the copy; its first `want` bytes are writable, and `want`
        // bytes remain in the reader's checked guest range.
        fixed (byte* dst = destination) r = Copy(reader._guest, dst, reader._cursor, want, PageFaultAccess.Read);
        reader.Advance(r.Bytes);
        return r;
    }

    /// <summary>
    /// Copies <c>min(reader.Remain, Avail)</c> bytes from <paramref name="reader"/> into guest
    /// memory; both cursors advance by exactly the bytes copied.
    /// </summary>
    public static CopyResult WriteFallible(this ref VmWriter<Fallible> writer, ref VmReader<Infallible> reader)
    {
        ulong want = Math.Min(reader.Remain, writer.Avail);
        // SAFETY: `want` bytes remain in the writer's checked guest range and in the reader's
        // library memory, which its creator keeps valid and pinned.
        CopyResult r = Copy(writer._guest, writer._cursor, reader._cursor, want, PageFaultAccess.Write);
        reader.Advance(r.Bytes);
        writer.Advance(r.Bytes);
        return r;
    }

    /// <summary>Copies <c>min(source.Length, Avail)</c> bytes of <paramref name="source"/> into guest memory.</summary>
    public static CopyResult WriteFallible(this ref VmWriter<Fallible> writer, ReadOnlySpan<byte> source)
    {
        ulong want = Math.Min(writer.Avail, (ulong)source.Length);
        CopyResult r;
        // SAFETY: the span is pinned for the copy; its first `want` bytes are readable, and `want`
        // bytes of room remain in the writer's checked guest range.
        fixed (byte* src = source) r = Copy(writer._guest, writer._cursor, src, want, PageFaultAccess.Write);
        writer.Advance(r.Bytes);
        return r;
    }

    /// <summary>Zeroes <c>min(len, Avail)</c> bytes of guest memory; the cursor advances by the bytes zeroed.</summary>
    public static CopyResult FillZeros(this ref VmWriter<Fallible> writer, ulong len)
    {
        ulong want = Math.Min(len, writer.Avail);
        // SAFETY: `want` bytes of room remain in the writer's checked guest range.
        CopyResult r = writer._guest.Run(new FillZeroOp(writer._cursor, want), out CopyResult stopped) ? new CopyResult(want, null, null) : stopped;
        writer.Advance(r.Bytes);
        return r;
    }

    /// <summary>
    /// Reads one <typeparamref name="T"/> (1, 2, 4 or 8 bytes with a single access; other sizes
    /// by copy). On failure the cursor does not move.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Fewer than <c>sizeof(T)</c> bytes remain.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static IoResult<T> ReadVal<T>(this ref VmReader<Fallible> reader) where T : unmanaged
    {
        if (reader.Remain < (ulong)sizeof(T)) ThrowHelper.OutOfRange($"only {reader.Remain} bytes remain", nameof(T));
        T value;
        // SAFETY: sizeof(T) bytes remain in the reader's checked guest range; value is a local
        // the load writes when it succeeds, and is read only then.
        if (!reader._guest.Run(new LoadOp<T>(reader._cursor, &value), out CopyResult stopped)) return new IoResult<T>(default, stopped.Error, stopped.Fault);
        reader.Advance((ulong)sizeof(T));
        return new IoResult<T>(value, null, null);
    }

    /// <summary>
    /// Writes one <typeparamref name="T"/> (1, 2, 4 or 8 bytes with a single access; other sizes
    /// by copy). On failure the cursor does not move.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Less than <c>sizeof(T)</c> bytes of room remain.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static IoResult<T> WriteVal<T>(this ref VmWriter<Fallible> writer, T value) where T : unmanaged
    {
        if (writer.Avail < (ulong)sizeof(T)) ThrowHelper.OutOfRange($"only {writer.Avail} bytes of room remain", nameof(T));
        // SAFETY: sizeof(T) bytes of room remain in the writer's checked guest range.
        if (!writer._guest.Run(new StoreOp<T>(writer._cursor, value), out CopyResult stopped)) return new IoResult<T>(default, stopped.Error, stopped.Fault);
        writer.Advance((ulong)sizeof(T));
        return new IoResult<T>(value, null, null);
    }

    /// <summary>Atomically loads the naturally aligned 32-bit value at the cursor; the cursor does not move.</summary>
    /// <exception cref="ArgumentException">The cursor is not 4-byte aligned, or fewer than 4 bytes remain.</exception>
    public static IoResult<uint> AtomicLoad32(this ref VmReader<Fallible> reader) => reader.AtomicLoad<uint>();

    /// <summary>Atomically loads the naturally aligned 64-bit value at the cursor; the cursor does not move.</summary>
    /// <exception cref="ArgumentException">The cursor is not 8-byte aligned, or fewer than 8 bytes remain.</exception>
    public static IoResult<ulong> AtomicLoad64(this ref VmReader<Fallible> reader) => reader.AtomicLoad<ulong>();

    private static IoResult<T> AtomicLoad<T>(this ref VmReader<Fallible> reader) where T : unmanaged
    {
        CheckAtomic(reader.Cursor, reader.Remain, sizeof(T));
        T value;
        // An aligned load of 4 or 8 bytes is a single atomic access on x86-64.
        // SAFETY: as in ReadVal; CheckAtomic proved the access aligned and inside the range.
        return reader._guest.Run(new LoadOp<T>(reader._cursor, &value), out CopyResult stopped)
            ? new IoResult<T>(value, null, null) : new IoResult<T>(default, stopped.Error, stopped.Fault);
    }

    /// <summary>
    /// Atomically replaces the aligned 32-bit value at the cursor with <paramref name="desired"/>
    /// if it equals <paramref name="expected"/>. Returns the value seen before (equal to
    /// <paramref name="expected"/> exactly when the swap happened). The cursor does not move.
    /// The access counts as a write even when the values differ.
    /// </summary>
    /// <exception cref="ArgumentException">The cursor is not 4-byte aligned, or fewer than 4 bytes of room remain.</exception>
    public static IoResult<uint> AtomicCompareExchange(this ref VmWriter<Fallible> writer, uint expected, uint desired)
    {
        CheckAtomic(writer.Cursor, writer.Avail, sizeof(uint));
        // SAFETY: CheckAtomic proved the access aligned and inside the writer's checked range.
        return Cas32(writer._guest, writer._cursor, expected, desired);
    }

    /// <summary>The 64-bit form of <see cref="AtomicCompareExchange(ref VmWriter{Fallible}, uint, uint)"/>.</summary>
    /// <exception cref="ArgumentException">The cursor is not 8-byte aligned, or fewer than 8 bytes of room remain.</exception>
    public static IoResult<ulong> AtomicCompareExchange(this ref VmWriter<Fallible> writer, ulong expected, ulong desired)
    {
        CheckAtomic(writer.Cursor, writer.Avail, sizeof(ulong));
        // SAFETY: CheckAtomic proved the access aligned and inside the writer's checked range.
        return Cas64(writer._guest, writer._cursor, expected, desired);
    }

    /// <summary>The compare-exchange of 4 guest bytes at <paramref name="at"/>; the value seen or the fault.</summary>
    /// <remarks>SAFETY: the caller proves the 4 bytes aligned and inside a checked guest range.</remarks>
    internal static IoResult<uint> Cas32(in GuestAccess guest, byte* at, uint expected, uint desired)
    {
        uint observed;
        // SAFETY: the caller's proof; `observed` is a local the primitive writes only on success.
        return guest.Run(new Cas32Op(at, expected, desired, &observed), out CopyResult stopped)
            ? new IoResult<uint>(observed, null, null) : new IoResult<uint>(0, stopped.Error, stopped.Fault);
    }

    /// <summary>The 64-bit form of <see cref="Cas32"/>.</summary>
    /// <remarks>SAFETY: the caller proves the 8 bytes aligned and inside a checked guest range.</remarks>
    internal static IoResult<ulong> Cas64(in GuestAccess guest, byte* at, ulong expected, ulong desired)
    {
        ulong observed;
        // SAFETY: the caller's proof; `observed` is a local the primitive writes only on success.
        return guest.Run(new Cas64Op(at, expected, desired, &observed), out CopyResult stopped)
            ? new IoResult<ulong>(observed, null, null) : new IoResult<ulong>(0, stopped.Error, stopped.Fault);
    }

    /// <summary>
    /// Atomically replaces the aligned 32-bit value at the cursor with <paramref name="value"/>
    /// (sequentially consistent, like <c>Interlocked.Exchange</c>) and returns the value it
    /// replaced. The cursor does not move.
    /// </summary>
    /// <exception cref="ArgumentException">The cursor is not 4-byte aligned, or fewer than 4 bytes of room remain.</exception>
    public static IoResult<uint> AtomicSwap(this ref VmWriter<Fallible> writer, uint value)
    {
        CheckAtomic(writer.Cursor, writer.Avail, sizeof(uint));
        // SAFETY: CheckAtomic proved the access aligned and inside the writer's checked range.
        return Swap32(writer._guest, writer._cursor, value);
    }

    /// <summary>The 64-bit form of <see cref="AtomicSwap(ref VmWriter{Fallible}, uint)"/>.</summary>
    /// <exception cref="ArgumentException">The cursor is not 8-byte aligned, or fewer than 8 bytes of room remain.</exception>
    public static IoResult<ulong> AtomicSwap(this ref VmWriter<Fallible> writer, ulong value)
    {
        CheckAtomic(writer.Cursor, writer.Avail, sizeof(ulong));
        // SAFETY: CheckAtomic proved the access aligned and inside the writer's checked range.
        return Swap64(writer._guest, writer._cursor, value);
    }

    /// <summary>
    /// Atomically stores <paramref name="value"/> at the aligned 32-bit slot at the cursor,
    /// sequentially consistent (an exchange whose old value is dropped, as Go's
    /// <c>atomic.StoreUint32</c> on x86-64); returns the value stored. The cursor does not move.
    /// </summary>
    /// <exception cref="ArgumentException">The cursor is not 4-byte aligned, or fewer than 4 bytes of room remain.</exception>
    public static IoResult<uint> AtomicStore(this ref VmWriter<Fallible> writer, uint value)
    {
        IoResult<uint> r = writer.AtomicSwap(value);
        return r.IsOk ? r with { Value = value } : r;
    }

    /// <summary>The 64-bit form of <see cref="AtomicStore(ref VmWriter{Fallible}, uint)"/>.</summary>
    /// <exception cref="ArgumentException">The cursor is not 8-byte aligned, or fewer than 8 bytes of room remain.</exception>
    public static IoResult<ulong> AtomicStore(this ref VmWriter<Fallible> writer, ulong value)
    {
        IoResult<ulong> r = writer.AtomicSwap(value);
        return r.IsOk ? r with { Value = value } : r;
    }

    /// <summary>The exchange of 4 guest bytes at <paramref name="at"/>; the old value or the fault.</summary>
    /// <remarks>SAFETY: the caller proves the 4 bytes aligned and inside a checked guest range.</remarks>
    internal static IoResult<uint> Swap32(in GuestAccess guest, byte* at, uint value)
    {
        uint old;
        // SAFETY: the caller's proof; `old` is a local the primitive writes only on success.
        return guest.Run(new Swap32Op(at, value, &old), out CopyResult stopped)
            ? new IoResult<uint>(old, null, null) : new IoResult<uint>(0, stopped.Error, stopped.Fault);
    }

    /// <summary>The 64-bit form of <see cref="Swap32"/>.</summary>
    /// <remarks>SAFETY: the caller proves the 8 bytes aligned and inside a checked guest range.</remarks>
    internal static IoResult<ulong> Swap64(in GuestAccess guest, byte* at, ulong value)
    {
        ulong old;
        // SAFETY: the caller's proof; `old` is a local the primitive writes only on success.
        return guest.Run(new Swap64Op(at, value, &old), out CopyResult stopped)
            ? new IoResult<ulong>(old, null, null) : new IoResult<ulong>(0, stopped.Error, stopped.Fault);
    }

    /// <summary>
    /// Reads a NUL-terminated string of at most <c>buffer.Length - 1</c> bytes into
    /// <paramref name="buffer"/> (NUL included) and returns its length without the NUL; the
    /// cursor moves past the NUL. Fails with <see cref="UVmError.InvalidArgs"/> (cursor unmoved)
    /// when no NUL is found within the buffer or the reader's range, and with
    /// <see cref="UVmError.PageFault"/> (cursor unmoved) on an unresolved fault.
    /// </summary>
    public static IoResult<int> ReadCString(this ref VmReader<Fallible> reader, Span<byte> buffer)
    {
        ulong limit = Math.Min((ulong)buffer.Length, reader.Remain);
        ulong done = 0;
        // SAFETY: the buffer is pinned while its first `limit` bytes are written; every guest
        // byte read lies inside the reader's range and is read by the fault-recovering copy.
        fixed (byte* dst = buffer)
        {
            while (done < limit)
            {
                // Copy up to the next page boundary at a time so a string near a hole is read exactly.
                ulong toBoundary = Paging.PageSize - ((ulong)(reader._cursor + done) & (Paging.PageSize - 1));
                ulong chunk = Math.Min(toBoundary, limit - done);
                CopyResult r = Copy(reader._guest, dst + done, reader._cursor + done, chunk, PageFaultAccess.Read);
                int nul = new ReadOnlySpan<byte>(dst + done, (int)r.Bytes).IndexOf((byte)0);
                if (nul >= 0)
                {
                    ulong length = done + (ulong)nul;
                    reader.Advance(length + 1);
                    return new IoResult<int>((int)length, null, null);
                }
                done += r.Bytes;
                if (!r.IsOk) return new IoResult<int>(0, UVmError.PageFault, r.Fault);
            }
        }
        return new IoResult<int>(0, UVmError.InvalidArgs, null);
    }

    /// <summary>
    /// Copies <paramref name="want"/> bytes, <paramref name="access"/> saying which side is guest
    /// memory: the source of a read, the destination of a write. Returns the exact prefix copied.
    /// </summary>
    /// <remarks>SAFETY: the caller proves one side inside its checked guest range and the other
    /// pinned, valid library memory, both of <paramref name="want"/> bytes.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static CopyResult Copy(in GuestAccess guest, byte* dst, byte* src, ulong want, PageFaultAccess access) =>
        guest.Run(new CopyOp(dst, src, want, access), out CopyResult stopped) ? new CopyResult(want, null, null) : stopped;

    private static void CheckAtomic(nint cursor, ulong room, int size)
    {
        if (((ulong)cursor & (ulong)(size - 1)) != 0) ThrowHelper.Argument($"an atomic access of {size} bytes needs a {size}-byte aligned address", "cursor");
        if (room < (ulong)size) ThrowHelper.Argument($"an atomic access of {size} bytes needs {size} bytes of room", "cursor");
    }
}
