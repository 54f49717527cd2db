using UVm.Faults;

namespace UVm.Io;

/// <summary>
/// The outcome of a fallible copy: how many bytes were transferred, and if it stopped early,
/// why. Returned, not thrown: a fault in guest memory is an expected event.
/// </summary>
/// <param name="Bytes">Bytes transferred; exact to the byte even when the copy stopped on a fault.</param>
/// <param name="Error">Null on success; <see cref="UVmError.PageFault"/> when a fault could not be resolved.</param>
/// <param name="Fault">The unresolved fault, when <see cref="Error"/> is <see cref="UVmError.PageFault"/>.</param>
public readonly record struct CopyResult(ulong Bytes, UVmError? Error, PageFaultInfo? Fault)
{
    /// <summary>Whether the copy did everything it was asked to.</summary>
    public bool IsOk => Error is null;
}

/// <summary>The outcome of a fallible single-value operation.</summary>
/// <typeparam name="T">The value type.</typeparam>
/// <param name="Value">The value read or observed; default when <see cref="Error"/> is set.</param>
/// <param name="Error">Null on success.</param>
/// <param name="Fault">The unresolved fault, when <see cref="Error"/> is <see cref="UVmError.PageFault"/>.</param>
public readonly record struct IoResult<T>(T Value, UVmError? Error, PageFaultInfo? Fault)
{
    /// <summary>Whether the operation succeeded.</summary>
    public bool IsOk => Error is null;

    /// <summary>The value, or a <see cref="UVmException"/> carrying <see cref="Error"/>.</summary>
    public T Unwrap() => Error is { } e ? throw new UVmException(e, Fault is { } f ? $"fault at 0x{f.Address:x} ({f.Access}, {f.Kind})" : "operation failed") : Value;
}
