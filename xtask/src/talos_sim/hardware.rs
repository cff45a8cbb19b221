//! The hardware a simulated node reports through the resource API: its SMBIOS
//! system information and its whole disks, configurable per node so identity
//! checks and install-disk selection can be tested (matching, ambiguous and
//! missing disks, another machine's UUID).

use std::net::IpAddr;

/// `SystemInformations.hardware.talos.dev` (from SMBIOS).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemInfo {
    pub manufacturer: String,
    pub product_name: String,
    pub version: String,
    pub serial_number: String,
    pub uuid: String,
    pub wake_up_type: String,
    pub sku_number: String,
}

/// One `Disks.block.talos.dev` resource: a whole block device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimDisk {
    /// Kernel device name, the resource id (`sda`, `nvme0n1`, `vda`, `sr0`).
    pub id: String,
    pub size: u64,
    pub io_size: u64,
    pub sector_size: u64,
    pub readonly: bool,
    pub model: String,
    pub serial: String,
    pub modalias: String,
    pub wwid: String,
    pub bus_path: String,
    pub sub_system: String,
    pub transport: String,
    pub rotational: bool,
    pub cdrom: bool,
    pub uuid: String,
    pub symlinks: Vec<String>,
}

impl SimDisk {
    /// An NVMe SSD (`/dev/<id>`), identified by model, serial and an EUI WWID.
    pub fn nvme(id: &str, model: &str, serial: &str, size: u64) -> Self {
        Self {
            id: id.into(),
            size,
            io_size: 512,
            sector_size: 512,
            model: model.into(),
            serial: serial.into(),
            modalias: "nvme:v144DdA80Asd144DsA801".into(),
            wwid: format!("eui.{}", hex_of(serial)),
            bus_path: format!("/pci-0000:0{}:00.0/nvme", id.len() % 10),
            sub_system: "/sys/class/block".into(),
            transport: "nvme".into(),
            symlinks: vec![format!("/dev/disk/by-id/nvme-{}_{serial}", model.replace(' ', "_"))],
            ..Self::default()
        }
    }

    /// A SATA disk (`rotational` for an HDD), with a NAA WWID.
    pub fn sata(id: &str, model: &str, serial: &str, size: u64, rotational: bool) -> Self {
        Self {
            id: id.into(),
            size,
            io_size: 4096,
            sector_size: 512,
            model: model.into(),
            serial: serial.into(),
            modalias: "scsi:t-0x00".into(),
            wwid: format!("naa.{}", hex_of(serial)),
            bus_path: "/pci-0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0".into(),
            sub_system: "/sys/class/block".into(),
            transport: "sata".into(),
            rotational,
            ..Self::default()
        }
    }

    /// A virtio-blk disk as QEMU presents it: no model, no WWID.
    pub fn virtio(id: &str, serial: &str, size: u64) -> Self {
        Self {
            id: id.into(),
            size,
            io_size: 512,
            sector_size: 512,
            serial: serial.into(),
            modalias: "virtio:d00000002v00001AF4".into(),
            bus_path: "/pci-0000:00:05.0/virtio2".into(),
            sub_system: "/sys/class/block".into(),
            transport: "virtio".into(),
            rotational: true,
            ..Self::default()
        }
    }

    /// A read-only virtual CD-ROM.
    pub fn cdrom(id: &str) -> Self {
        Self {
            id: id.into(),
            size: 104_857_600,
            io_size: 2048,
            sector_size: 2048,
            readonly: true,
            model: "QEMU DVD-ROM".into(),
            modalias: "scsi:t-0x05".into(),
            bus_path: "/pci-0000:00:01.1/ata2/host1/target1:0:0/1:0:0:0".into(),
            sub_system: "/sys/class/block".into(),
            transport: "sata".into(),
            rotational: true,
            cdrom: true,
            ..Self::default()
        }
    }
}

fn hex_of(s: &str) -> String {
    let mut h: String = s.bytes().map(|b| format!("{b:02x}")).collect();
    h.truncate(16);
    h
}

/// Everything a node reports about its hardware.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hardware {
    pub system: SystemInfo,
    pub disks: Vec<SimDisk>,
}

impl Hardware {
    /// What a fresh simulated node reports: a QEMU-like machine with a random
    /// SMBIOS UUID, a serial derived from its address, a 100 GB virtio disk
    /// `vda` and a CD-ROM `sr0`.
    pub fn default_for(ip: IpAddr) -> Self {
        let r: [u8; 16] = rand::random();
        let uuid = format!(
            "{}-{}-4{}-a{}-{}",
            hex(&r[0..4]),
            hex(&r[4..6]),
            &hex(&r[6..8])[1..],
            &hex(&r[8..10])[1..],
            hex(&r[10..16])
        );
        Self {
            system: SystemInfo {
                manufacturer: "QEMU".into(),
                product_name: "Standard PC (Q35 + ICH9, 2009)".into(),
                version: "pc-q35-9.2".into(),
                serial_number: format!("SIM-{}", ip.to_string().replace(['.', ':'], "-")),
                uuid,
                wake_up_type: "Power Switch".into(),
                sku_number: String::new(),
            },
            disks: vec![SimDisk::virtio("vda", "", 100_000_000_000), SimDisk::cdrom("sr0")],
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
