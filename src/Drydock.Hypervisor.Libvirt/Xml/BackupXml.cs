using System.Globalization;
using System.Xml.Linq;

namespace Drydock.Hypervisor.Libvirt.Xml;

/// <summary>How a pull backup's NBD server listens.</summary>
/// <param name="Transport"><c>unix</c> or <c>tcp</c>.</param>
/// <param name="Socket">The Unix socket path (unix).</param>
/// <param name="Host">The host name or address (tcp).</param>
/// <param name="Port">The port (tcp).</param>
/// <param name="Tls">Whether NBD clients must use TLS (tcp; libvirt's <c>backup_tls_x509_cert_dir</c> certificates).</param>
internal sealed record BackupServer(string Transport, string? Socket, string? Host, int? Port, bool Tls)
{
    /// <summary>A Unix socket server.</summary>
    public static BackupServer Unix(string socket) => new("unix", socket, null, null, false);

    /// <summary>A TCP server.</summary>
    public static BackupServer Tcp(string host, int port, bool tls) => new("tcp", null, host, port, tls);
}

/// <summary>One <c>&lt;disk&gt;</c> of a <c>&lt;domainbackup&gt;</c>.</summary>
internal sealed record BackupDisk
{
    /// <summary>The disk's target name.</summary>
    public required string Name { get; init; }

    /// <summary>Whether the disk is part of the backup.</summary>
    public bool Backup { get; init; } = true;

    /// <summary><c>full</c> or <c>incremental</c> (per-disk <c>backupmode</c>, libvirt ≥ 7.6).</summary>
    public string? BackupMode { get; init; }

    /// <summary>The checkpoint an incremental disk is relative to (per-disk <c>incremental</c>).</summary>
    public string? Incremental { get; init; }

    /// <summary>The NBD export name (pull); libvirt defaults it to the target name.</summary>
    public string? ExportName { get; init; }

    /// <summary>The exported bitmap's name (pull, incremental); libvirt defaults it to <c>backup-TARGET</c>.</summary>
    public string? ExportBitmap { get; init; }

    /// <summary>The scratch (fleece) file (pull).</summary>
    public string? ScratchFile { get; init; }

    /// <summary>The target file (push).</summary>
    public string? TargetFile { get; init; }

    /// <summary>The target's format (push), e.g. <c>qcow2</c>.</summary>
    public string? TargetFormat { get; init; }

    /// <summary>The NBD metadata context of the changed blocks, for an incremental pull disk.</summary>
    public string? ChangedBlocksContext =>
        Backup && (Incremental is not null || string.Equals(BackupMode, "incremental", StringComparison.Ordinal))
            ? "qemu:dirty-bitmap:" + (ExportBitmap ?? "backup-" + Name)
            : null;
}

/// <summary>
/// A libvirt <c>&lt;domainbackup&gt;</c> document (formatbackup): what <c>virDomainBackupBegin</c> takes and
/// <c>virDomainBackupGetXMLDesc</c> returns. Writing always puts <c>type='file'</c> on every backed-up disk and a
/// <c>&lt;scratch&gt;</c> (pull) or <c>&lt;target&gt;</c> (push) file, because libvirt 9.0 gives misleading errors without
/// them (REAL-STACK.md).
/// </summary>
internal sealed record BackupXml
{
    /// <summary><c>pull</c> or <c>push</c>.</summary>
    public required string Mode { get; init; }

    /// <summary>The job-wide <c>&lt;incremental&gt;</c> checkpoint, when every disk shares one.</summary>
    public string? Incremental { get; init; }

    /// <summary>The NBD server (pull).</summary>
    public BackupServer? Server { get; init; }

    /// <summary>The disks.</summary>
    public required IReadOnlyList<BackupDisk> Disks { get; init; }

    /// <summary>The disk named <paramref name="target"/>, or null.</summary>
    public BackupDisk? FindDisk(string target) => Disks.FirstOrDefault(d => string.Equals(d.Name, target, StringComparison.Ordinal));

    /// <summary>Writes the document.</summary>
    public string Format()
    {
        var root = new XElement("domainbackup", new XAttribute("mode", Mode));
        if (Incremental is not null)
        {
            root.Add(new XElement("incremental", Incremental));
        }

        if (Server is { } server)
        {
            var element = new XElement("server", new XAttribute("transport", server.Transport));
            if (server.Socket is not null)
            {
                element.Add(new XAttribute("socket", server.Socket));
            }

            if (server.Host is not null)
            {
                element.Add(new XAttribute("name", server.Host));
            }

            if (server.Port is { } port)
            {
                element.Add(new XAttribute("port", port.ToString(CultureInfo.InvariantCulture)));
            }

            if (server.Tls)
            {
                element.Add(new XAttribute("tls", "yes"));
            }

            root.Add(element);
        }

        var disks = new XElement("disks");
        foreach (var disk in Disks)
        {
            if (!disk.Backup)
            {
                disks.Add(new XElement("disk", new XAttribute("name", disk.Name), new XAttribute("backup", "no")));
                continue;
            }

            var element = new XElement("disk", new XAttribute("name", disk.Name), new XAttribute("backup", "yes"), new XAttribute("type", "file"));
            if (disk.BackupMode is not null)
            {
                element.Add(new XAttribute("backupmode", disk.BackupMode));
            }

            if (disk.Incremental is not null)
            {
                element.Add(new XAttribute("incremental", disk.Incremental));
            }

            if (disk.ExportName is not null)
            {
                element.Add(new XAttribute("exportname", disk.ExportName));
            }

            if (disk.ExportBitmap is not null)
            {
                element.Add(new XAttribute("exportbitmap", disk.ExportBitmap));
            }

            if (disk.TargetFile is not null)
            {
                element.Add(new XElement("target", new XAttribute("file", disk.TargetFile)));
            }

            if (disk.TargetFormat is not null)
            {
                element.Add(new XElement("driver", new XAttribute("type", disk.TargetFormat)));
            }

            if (disk.ScratchFile is not null)
            {
                element.Add(new XElement("scratch", new XAttribute("file", disk.ScratchFile)));
            }

            disks.Add(element);
        }

        root.Add(disks);
        return root.ToString(SaveOptions.None);
    }

    /// <summary>Reads a document (as <c>virDomainBackupGetXMLDesc</c> returns it).</summary>
    /// <exception cref="FormatException">Malformed.</exception>
    public static BackupXml Parse(string xml)
    {
        var root = SafeXml.Load(xml, "domainbackup");
        BackupServer? server = null;
        if (root.Element("server") is { } serverElement)
        {
            int? port = serverElement.Attribute("port") is { } portAttribute
                && int.TryParse(portAttribute.Value, NumberStyles.None, CultureInfo.InvariantCulture, out var parsedPort) ? parsedPort : null;
            server = new BackupServer(
                (string?)serverElement.Attribute("transport") ?? "tcp",
                (string?)serverElement.Attribute("socket"),
                (string?)serverElement.Attribute("name"),
                port,
                string.Equals((string?)serverElement.Attribute("tls"), "yes", StringComparison.Ordinal));
        }

        var disks = new List<BackupDisk>();
        foreach (var disk in root.Element("disks")?.Elements("disk") ?? [])
        {
            var name = (string?)disk.Attribute("name") ?? throw new FormatException("A backup <disk> has no name.");
            disks.Add(new BackupDisk
            {
                Name = name,
                Backup = !string.Equals((string?)disk.Attribute("backup"), "no", StringComparison.Ordinal),
                BackupMode = (string?)disk.Attribute("backupmode"),
                Incremental = (string?)disk.Attribute("incremental"),
                ExportName = (string?)disk.Attribute("exportname"),
                ExportBitmap = (string?)disk.Attribute("exportbitmap"),
                ScratchFile = (string?)disk.Element("scratch")?.Attribute("file") ?? (string?)disk.Element("scratch")?.Attribute("dev"),
                TargetFile = (string?)disk.Element("target")?.Attribute("file") ?? (string?)disk.Element("target")?.Attribute("dev"),
                TargetFormat = (string?)disk.Element("driver")?.Attribute("type"),
            });
        }

        return new BackupXml
        {
            Mode = (string?)root.Attribute("mode") ?? "push",
            Incremental = root.Element("incremental")?.Value.Trim(),
            Server = server,
            Disks = disks,
        };
    }
}
