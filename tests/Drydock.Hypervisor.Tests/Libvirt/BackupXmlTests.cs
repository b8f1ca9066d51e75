using Drydock.Hypervisor.Libvirt;
using Drydock.Hypervisor.Libvirt.Xml;
using Xunit;

namespace Drydock.Hypervisor.Tests.Libvirt;

public sealed class BackupXmlTests
{
    // What libvirt 9.0 returned from virDomainBackupGetXMLDesc for a pull job with one incremental and one full disk.
    private const string RecordedJob = """
        <domainbackup mode='pull'>
          <server transport='unix' socket='/tmp/lvexp/sock/drydock-cap-0a1b2c3d.sock'/>
          <disks>
            <disk name='vda' backup='yes' type='file' backupmode='incremental' incremental='drydock-cp1' exportname='vda' exportbitmap='backup-vda' index='4'>
              <driver type='qcow2'/>
              <scratch file='/tmp/lvexp/scratch/drydock-cap-0a1b2c3d.vda.qcow2'/>
            </disk>
            <disk name='vdb' backup='yes' type='file' backupmode='full' exportname='vdb' index='5'>
              <driver type='qcow2'/>
              <scratch file='/tmp/lvexp/scratch/drydock-cap-0a1b2c3d.vdb.qcow2'/>
            </disk>
            <disk name='vdc' backup='no'/>
          </disks>
        </domainbackup>
        """;

    [Fact]
    public void Reads_libvirts_job_xml_with_export_names_bitmaps_and_scratch_files()
    {
        var job = BackupXml.Parse(RecordedJob);

        Assert.Equal("pull", job.Mode);
        Assert.Equal("unix", job.Server!.Transport);
        Assert.Equal("/tmp/lvexp/sock/drydock-cap-0a1b2c3d.sock", job.Server.Socket);
        var vda = job.FindDisk("vda")!;
        Assert.Equal("drydock-cp1", vda.Incremental);
        Assert.Equal("qemu:dirty-bitmap:backup-vda", vda.ChangedBlocksContext);
        Assert.Equal("/tmp/lvexp/scratch/drydock-cap-0a1b2c3d.vda.qcow2", vda.ScratchFile);
        Assert.Null(job.FindDisk("vdb")!.ChangedBlocksContext);
        Assert.False(job.FindDisk("vdc")!.Backup);
        Assert.Equal("drydock-cap-0a1b2c3d", LibvirtDriver.CaptureIdOf(job));
    }

    [Fact]
    public void Written_pull_xml_always_has_type_file_and_a_scratch_and_reads_back_equal()
    {
        var written = new BackupXml
        {
            Mode = "pull",
            Server = BackupServer.Tcp("127.0.0.1", 10810, tls: true),
            Disks =
            [
                new BackupDisk { Name = "vda", BackupMode = "incremental", Incremental = "drydock-cp1", ExportName = "vda", ScratchFile = "/s/x.vda.qcow2" },
                new BackupDisk { Name = "vdb", Backup = false },
            ],
        };

        var xml = written.Format();
        Assert.Contains("type=\"file\"", xml, StringComparison.Ordinal);
        Assert.Contains("<scratch file=\"/s/x.vda.qcow2\" />", xml, StringComparison.Ordinal);
        Assert.Contains("tls=\"yes\"", xml, StringComparison.Ordinal);
        var read = BackupXml.Parse(xml);
        Assert.Equal(written.Server, read.Server);
        Assert.Equal(written.Disks, read.Disks);
        Assert.Null(LibvirtDriver.CaptureIdOf(read));
    }

    [Fact]
    public void Push_xml_names_the_target_file_and_format()
    {
        var xml = new BackupXml
        {
            Mode = "push",
            Disks = [new BackupDisk { Name = "vda", BackupMode = "full", TargetFile = "/b/vda.qcow2", TargetFormat = "qcow2" }],
        }.Format();

        var disk = BackupXml.Parse(xml).FindDisk("vda")!;
        Assert.Equal("/b/vda.qcow2", disk.TargetFile);
        Assert.Equal("qcow2", disk.TargetFormat);
        Assert.Equal("push", BackupXml.Parse(xml).Mode);
    }

    [Theory]
    [InlineData("<domainbackup mode='pull'><disks><disk backup='yes'/></disks></domainbackup>")]
    [InlineData("<domain/>")]
    [InlineData("<!DOCTYPE x [<!ENTITY a 'b'>]><domainbackup/>")]
    [InlineData("<domainbackup")]
    public void Malformed_or_hostile_job_xml_is_a_format_error(string xml) =>
        Assert.Throws<FormatException>(() => BackupXml.Parse(xml));
}
