namespace Drydock.Hypervisor.Libvirt;

/// <summary>A push-mode backup (<see cref="LibvirtDriver.PushBackupAsync"/>).</summary>
public sealed record PushBackupRequest
{
    /// <summary>The domain.</summary>
    public required string DomainId { get; init; }

    /// <summary>The disks to copy.</summary>
    public required IReadOnlyList<string> Targets { get; init; }

    /// <summary>
    /// An existing directory where libvirt writes <c>TARGET.qcow2</c> per disk. QEMU writes the files, so the directory
    /// must be accessible to QEMU's user.
    /// </summary>
    public required string TargetDirectory { get; init; }

    /// <summary>Copy only the blocks changed since this checkpoint; null copies everything.</summary>
    public string? SinceCheckpoint { get; init; }

    /// <summary>A checkpoint to create atomically with the job (removed again if the job fails), or null.</summary>
    public string? NewCheckpoint { get; init; }
}

/// <summary>A finished push backup.</summary>
/// <param name="DomainId">The domain's UUID.</param>
/// <param name="Files">Per disk target, the qcow2 file written.</param>
/// <param name="NewCheckpoint">The checkpoint created with it, or null.</param>
public sealed record PushBackupResult(string DomainId, IReadOnlyDictionary<string, string> Files, string? NewCheckpoint);
