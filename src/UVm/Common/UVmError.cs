namespace UVm;

/// <summary>
/// The expected failures of UVm operations. Misuse (an unaligned length, a range past a
/// cursor's end) is reported with <see cref="ArgumentException"/> instead; these codes name
/// what a correct caller must still be ready for.
/// </summary>
public enum UVmError
{
    /// <summary>The space is not activated on this thread, or the range is not user space.</summary>
    AccessDenied = 1,
    /// <summary>An argument names a range or value the operation cannot accept.</summary>
    InvalidArgs,
    /// <summary>The frame pool has no free frame (or run of frames) of the requested size.</summary>
    NoMemory,
    /// <summary>A page fault in guest memory could not be resolved.</summary>
    PageFault,
    /// <summary>The range already holds a mapping and overwriting was not allowed.</summary>
    MapAlreadyMappedVaddr,
    /// <summary>The host kernel refused memory (<c>ENOMEM</c> from <c>mmap</c>/<c>mprotect</c>).</summary>
    HostNoMemory,
    /// <summary>The space's budget of host mappings (see <c>vm.max_map_count</c>) would be exceeded.</summary>
    HostMappingLimit,
    /// <summary>
    /// The host refused the operation for a reason of its own other than memory: a file that
    /// does not allow the rights asked for (read-only, or on a <c>noexec</c> mount), a descriptor
    /// limit, a file that cannot grow. The message carries the host's <c>errno</c>.
    /// </summary>
    HostRefused,
}

/// <summary>An expected UVm failure, carrying its <see cref="UVmError"/> code.</summary>
public sealed class UVmException : Exception
{
    /// <summary>Creates the exception for <paramref name="error"/> with a message.</summary>
    public UVmException(UVmError error, string message) : base($"{error}: {message}") => Error = error;

    /// <summary>The failure code.</summary>
    public UVmError Error { get; }
}

/// <summary>Throw sites kept out of hot paths so that callers stay small and inlinable.</summary>
internal static class ThrowHelper
{
    [System.Diagnostics.CodeAnalysis.DoesNotReturn]
    internal static void UVm(UVmError error, string message) => throw new UVmException(error, message);

    [System.Diagnostics.CodeAnalysis.DoesNotReturn]
    internal static void Argument(string message, string param) => throw new ArgumentException(message, param);

    [System.Diagnostics.CodeAnalysis.DoesNotReturn]
    internal static void OutOfRange(string message, string param) => throw new ArgumentOutOfRangeException(param, message);

    [System.Diagnostics.CodeAnalysis.DoesNotReturn]
    internal static void Disposed(string name) => throw new ObjectDisposedException(name);
}
