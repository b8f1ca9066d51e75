namespace Drydock.Hypervisor;

/// <summary>
/// One connection to one hypervisor host: the operations Drydock needs from libvirt, Virtuozzo, QEMU (QMP) or the
/// simulator, in one model (DESIGN.md §5). A capture gives, per disk, an NBD endpoint with a point-in-time view and,
/// when asked, the blocks changed since a checkpoint; releasing it says whether the backup committed.
/// </summary>
/// <remarks>
/// <para>
/// Domains are named by <see cref="DomainInfo.Id"/> (a UUID where the hypervisor has one). Every method that mutates
/// checkpoints refuses names that do not carry Drydock's prefix (<see cref="DrydockNames"/>; FAULTS.md F15) with a
/// <see cref="ForeignCheckpointException"/>. Errors are <see cref="HypervisorException"/>s carrying the hypervisor's
/// own message.
/// </para>
/// <para>
/// Implementations are safe to call concurrently; at most one capture exists per domain (a second one is refused
/// with <see cref="DomainBusyException"/>, F16). Every failure inside <see cref="BeginCaptureAsync"/> releases what it
/// created before throwing.
/// </para>
/// </remarks>
public interface IHypervisorDriver : IAsyncDisposable
{
    /// <summary>The host this driver talks to (hypervisor host name; the simulated host's name for sim).</summary>
    string HostName { get; }

    /// <summary>What this driver and host support.</summary>
    HypervisorCapabilities Capabilities { get; }

    /// <summary>Lists the domains on the host with their disks.</summary>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>Every domain the driver knows, running or not.</returns>
    Task<IReadOnlyList<DomainInfo>> ListDomainsAsync(CancellationToken cancellationToken = default);

    /// <summary>Describes one domain and its disks.</summary>
    /// <param name="domainId">The domain's <see cref="DomainInfo.Id"/>.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The domain as it is now.</returns>
    /// <exception cref="DomainNotFoundException">No such domain on this host.</exception>
    Task<DomainInfo> GetDomainAsync(string domainId, CancellationToken cancellationToken = default);

    /// <summary>The hypervisor's own definition of the domain (libvirt domain XML, the QEMU driver's JSON), for manifests.</summary>
    /// <param name="domainId">The domain.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The definition and its format.</returns>
    Task<DomainDefinition> GetDefinitionAsync(string domainId, CancellationToken cancellationToken = default);

    /// <summary>
    /// Starts a capture: a point-in-time view of the chosen disks, each exported over NBD, optionally with the blocks
    /// changed since a checkpoint per disk, and optionally a new checkpoint created at the same instant.
    /// </summary>
    /// <param name="request">What to capture.</param>
    /// <param name="cancellationToken">Cancels the call; what was created is released.</param>
    /// <returns>The capture, to read and then release with <see cref="ReleaseCaptureAsync"/>.</returns>
    /// <exception cref="DomainNotFoundException">No such domain.</exception>
    /// <exception cref="DomainStateException">The domain is not in a state that allows a capture.</exception>
    /// <exception cref="DomainBusyException">A capture already exists on the domain.</exception>
    /// <exception cref="DiskNotFoundException">A requested disk does not exist.</exception>
    /// <exception cref="CheckpointExistsException">The new checkpoint's name is taken.</exception>
    /// <exception cref="CheckpointNotFoundException">A base checkpoint is missing and <see cref="CaptureRequest.FallBackToFull"/> is off.</exception>
    /// <exception cref="CheckpointInconsistentException">A base bitmap is unusable and <see cref="CaptureRequest.FallBackToFull"/> is off.</exception>
    /// <exception cref="CaptureFailedException">The hypervisor could not set the capture up.</exception>
    Task<Capture> BeginCaptureAsync(CaptureRequest request, CancellationToken cancellationToken = default);

    /// <summary>
    /// Lists the captures that exist on the host, found by Drydock's tag, including those an earlier process started
    /// and never released (FAULTS.md F03).
    /// </summary>
    /// <param name="domainId">Only this domain, or null for every domain.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The captures found.</returns>
    Task<IReadOnlyList<CaptureSummary>> ListCapturesAsync(string? domainId = null, CancellationToken cancellationToken = default);

    /// <summary>
    /// Ends a capture: stops its exports, removes the block snapshot and the scratch/fleece files, and either keeps
    /// the capture's new checkpoint (<see cref="CaptureOutcome.Committed"/>) or removes it
    /// (<see cref="CaptureOutcome.Abandoned"/>). Idempotent: releasing a capture that no longer exists does nothing.
    /// </summary>
    /// <param name="domainId">The capture's domain.</param>
    /// <param name="captureId">The capture's <see cref="Capture.Id"/>.</param>
    /// <param name="outcome">Whether the restore point it fed was committed.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>True if something was released; false if the capture was already gone.</returns>
    Task<bool> ReleaseCaptureAsync(string domainId, string captureId, CaptureOutcome outcome, CancellationToken cancellationToken = default);

    /// <summary>Lists the domain's checkpoints, Drydock's and foreign ones (<see cref="CheckpointInfo.IsOwned"/>).</summary>
    /// <param name="domainId">The domain.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>Checkpoints, oldest first where the hypervisor knows the order.</returns>
    Task<IReadOnlyList<CheckpointInfo>> ListCheckpointsAsync(string domainId, CancellationToken cancellationToken = default);

    /// <summary>The checkpoint's XML (<c>&lt;domaincheckpoint&gt;</c>), to be saved with the restore point for a later redefine.</summary>
    /// <param name="domainId">The domain.</param>
    /// <param name="checkpoint">The checkpoint name.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The XML text.</returns>
    /// <exception cref="CheckpointNotFoundException">No such checkpoint.</exception>
    Task<string> GetCheckpointXmlAsync(string domainId, string checkpoint, CancellationToken cancellationToken = default);

    /// <summary>Creates a checkpoint (a new bitmap on each chosen disk) outside a capture.</summary>
    /// <param name="domainId">The domain.</param>
    /// <param name="checkpoint">A name with Drydock's prefix.</param>
    /// <param name="targets">Disks to include, or null for every disk that supports checkpoints.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The new checkpoint.</returns>
    /// <exception cref="ForeignCheckpointException">The name lacks Drydock's prefix.</exception>
    /// <exception cref="CheckpointExistsException">The name is taken (on any of the disks).</exception>
    Task<CheckpointInfo> CreateCheckpointAsync(string domainId, string checkpoint, IReadOnlyList<string>? targets = null, CancellationToken cancellationToken = default);

    /// <summary>
    /// Redefines a checkpoint from XML saved earlier (FAULTS.md F05), validating that its bitmaps exist and are usable.
    /// Drivers without checkpoint metadata (<see cref="HypervisorCapabilities.CheckpointMetadata"/> false) only validate.
    /// </summary>
    /// <param name="domainId">The domain.</param>
    /// <param name="checkpointXml">The XML from <see cref="GetCheckpointXmlAsync"/>.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The checkpoint as now defined.</returns>
    /// <exception cref="ForeignCheckpointException">The checkpoint is not Drydock's.</exception>
    /// <exception cref="CheckpointInconsistentException">Validation failed: a bitmap is missing or unusable.</exception>
    Task<CheckpointInfo> RedefineCheckpointAsync(string domainId, string checkpointXml, CancellationToken cancellationToken = default);

    /// <summary>Deletes one of Drydock's checkpoints: its bitmaps and metadata, or only its metadata.</summary>
    /// <param name="domainId">The domain.</param>
    /// <param name="checkpoint">The checkpoint name.</param>
    /// <param name="mode">What to delete.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <exception cref="ForeignCheckpointException">The checkpoint is not Drydock's.</exception>
    /// <exception cref="CheckpointNotFoundException">Nothing by that name exists.</exception>
    /// <exception cref="DomainBusyException">A capture uses it.</exception>
    Task DeleteCheckpointAsync(string domainId, string checkpoint, CheckpointDeleteMode mode = CheckpointDeleteMode.All, CancellationToken cancellationToken = default);

    /// <summary>Per disk: identity, size, and the state of every checkpoint bitmap on it.</summary>
    /// <param name="domainId">The domain.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>One entry per disk.</returns>
    Task<IReadOnlyList<DiskHealth>> GetDiskHealthAsync(string domainId, CancellationToken cancellationToken = default);

    /// <summary>Exports the disks of a paused (or, where the driver allows, stopped) domain writable over NBD, for a restore.</summary>
    /// <param name="domainId">The domain.</param>
    /// <param name="targets">Disks to export, or null for all.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The export; close it with <see cref="CloseRestoreExportAsync"/>.</returns>
    /// <exception cref="DomainStateException">The domain is running.</exception>
    Task<RestoreExport> OpenRestoreExportAsync(string domainId, IReadOnlyList<string>? targets = null, CancellationToken cancellationToken = default);

    /// <summary>Stops a restore export (flushing what was written). Idempotent.</summary>
    /// <param name="domainId">The domain.</param>
    /// <param name="exportId">The export's <see cref="RestoreExport.Id"/>.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>True if an export was stopped.</returns>
    Task<bool> CloseRestoreExportAsync(string domainId, string exportId, CancellationToken cancellationToken = default);

    /// <summary>Starts a stopped domain, optionally paused (for a restore before the guest runs).</summary>
    /// <param name="domainId">The domain.</param>
    /// <param name="paused">Start without running the guest.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <exception cref="HypervisorNotSupportedException">The driver cannot start domains.</exception>
    Task StartAsync(string domainId, bool paused = false, CancellationToken cancellationToken = default);

    /// <summary>Resumes a paused domain.</summary>
    /// <param name="domainId">The domain.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    Task ResumeAsync(string domainId, CancellationToken cancellationToken = default);

    /// <summary>
    /// Stops a domain at once (power off; no guest shutdown). As with libvirt's destroy, the hypervisor process is
    /// asked to end first so that it stores the bitmaps (checkpoints survive), and is killed only if it does not.
    /// </summary>
    /// <param name="domainId">The domain.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    Task DestroyAsync(string domainId, CancellationToken cancellationToken = default);

    /// <summary>
    /// Lifecycle events of every domain on the host from now on, until cancelled. Each call is an independent
    /// subscription; a slow reader does not block the driver (events beyond a bound are dropped and a
    /// <see cref="DomainEventKind.EventsLost"/> event says so).
    /// </summary>
    /// <param name="cancellationToken">Ends the subscription.</param>
    /// <returns>The events, in the order the driver saw them.</returns>
    IAsyncEnumerable<DomainEvent> WatchEventsAsync(CancellationToken cancellationToken = default);
}
